# Predicted against measured speedup per layer (bbits vs oneDNN int8), BOPs
# and roofline, from speedup.dat (bench/tools/bench_tables.py).
#   gnuplot -e "datafile='speedup.dat'; outbase='speedup_vs_int8'" bench/plots/speedup.gp
if (!exists("datafile")) datafile = 'speedup.dat'
if (!exists("outbase")) outbase = 'speedup_vs_int8'
set key top left box opaque
set grid
set logscale xy
set xrange [0.05:20]
set yrange [0.05:20]
set xlabel 'measured speedup vs oneDNN int8 (same layer)'
set ylabel 'predicted speedup'
set title 'Per-layer speedup: predicted vs measured (y = x is a perfect prediction)'
do for [fmt in "png svg"] {
  if (fmt eq "png") { set terminal pngcairo size 900,700 font ",11" } else { set terminal svg size 900,700 font ",11" }
  set output outbase.".".fmt
  plot x with lines lc rgb '#888888' dt 2 title 'y = x', \
       datafile using 5:3 with points pt 7 ps 0.8 lc rgb '#d62728' title 'BOPs (64 / (w x a))', \
       datafile using 5:4 with points pt 9 ps 0.9 lc rgb '#1f77b4' title 'roofline (calibrated)'
}
