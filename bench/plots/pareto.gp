# Accuracy against latency against relative BOPs for the Fashion-MNIST models
# trained here, from pareto.csv (columns: name,accuracy,latency_us,relative_bops,method,mu).
#   gnuplot -e "datafile='pareto.csv'; outbase='pareto'" bench/plots/pareto.gp
if (!exists("datafile")) datafile = 'pareto.csv'
if (!exists("outbase")) outbase = 'pareto'
set datafile separator ','
set key off
set grid
set offsets graph 0.08, graph 0.08, graph 0.1, graph 0.1
do for [fmt in "png svg"] {
  if (fmt eq "png") { set terminal pngcairo size 1200,520 font ",11" } else { set terminal svg size 1200,520 font ",11" }
  set output outbase.".".fmt
  set multiplot layout 1,2 title 'Fashion-MNIST models trained here (integer inference, 1 thread)'
  set xlabel 'latency (us, median, 1 thread)'
  set ylabel 'test accuracy'
  set cblabel 'relative BOPs'
  set logscale cb
  set cbrange [0.005:1]
  set palette rgbformulae 33,13,10
  plot datafile using 3:2:4 skip 1 with points pt 7 ps 1.6 lc palette, \
       '' using 3:2:1 skip 1 with labels offset 0,1 font ",8"
  unset logscale cb
  set xlabel 'relative BOPs (vs the same net at 32/32)'
  set logscale x
  set ylabel 'test accuracy'
  plot datafile using 4:2 skip 1 with points pt 7 ps 1.6 lc rgb '#1f77b4', \
       '' using 4:2:1 skip 1 with labels offset 0,1 font ",8"
  unset logscale x
  unset multiplot
}
