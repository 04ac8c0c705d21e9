# The soak benchmark's curve: server RSS and data directory disk use over
# time, from the CSV bench/soak.cc writes (elapsed_s,rss_bytes,disk_bytes,...).
#
#   gnuplot -e "csv='soak.csv'; png='docs/img/soak.png'" bench/soak.gp
#
# Optional: title='...' for the heading.

if (!exists("csv")) csv = "soak.csv"
if (!exists("png")) png = "soak.png"
if (!exists("title")) title = "weir_server under steady load with lapsing leases"

set terminal pngcairo size 1000,640 font ",10" noenhanced
set output png
set datafile separator ","
set key autotitle columnhead
set grid
set key top left
set xlabel "minutes"
mib(x) = x / 1048576.0

set multiplot layout 2,1 title title
set ylabel "RSS (MiB)"
set yrange [0:*]
unset xlabel
plot csv using ($1/60):(mib($2)) with lines lw 2 lc rgb "#1f77b4" \
     title "server resident set"
set xlabel "minutes"
set ylabel "disk (MiB)"
set yrange [0:*]
plot csv using ($1/60):(mib($3)) with lines lw 2 lc rgb "#d62728" \
     title "data directory on disk (st_blocks x 512)"
unset multiplot
