# Roofline-predicted against measured time per layer, from roofline.dat.
#   gnuplot -e "datafile='roofline.dat'; outbase='roofline_time'" bench/plots/roofline.gp
if (!exists("datafile")) datafile = 'roofline.dat'
if (!exists("outbase")) outbase = 'roofline_time'
set key top left box opaque
set grid
set logscale xy
set xlabel 'measured time per layer (us, median)'
set ylabel 'roofline time (us)'
set title 'Roofline prediction per layer (band: +/-25%)'
do for [fmt in "png svg"] {
  if (fmt eq "png") { set terminal pngcairo size 900,700 font ",11" } else { set terminal svg size 900,700 font ",11" }
  set output outbase.".".fmt
  plot x with lines lc rgb '#444444' title 'y = x', \
       1.25*x with lines lc rgb '#aaaaaa' dt 2 title '+25%', \
       0.75*x with lines lc rgb '#aaaaaa' dt 2 title '-25%', \
       datafile using 3:4 with points pt 7 ps 0.7 lc rgb '#1f77b4' title 'layers (all models, 1 and 2 threads)'
}
