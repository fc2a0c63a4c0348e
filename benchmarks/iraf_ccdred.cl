# IRAF noao.imred.ccdred batch reduction of a night, for bench_peers.py.
#
# Read by the IRAF command language on its standard input (irafcl < iraf_ccdred.cl),
# in a working directory prepared by bench_peers.py, which holds:
#   iraf_ccdred.dat            the instrument translation file (IMAGETYP words)
#   bias.lis dark.lis flat.lis light.lis            raw frames, one path a line
#   darkout.lis flatout.lis lightout.lis            the names ccdproc writes them to
# It writes Zero.fits, Dark.fits, Flat.fits, the bias-subtracted darks, the
# calibrated flats and the calibrated science frames (32-bit real), never the raw files.
# The CL exits 0 even when a task fails: the caller searches its output for errors.

set imtype = "fits"
noao
imred
ccdred

ccdred.instrument = "iraf_ccdred.dat"
ccdred.pixeltype = "real real"
ccdred.verbose = yes
ccdred.logfile = "ccdred.log"
ccdred.plotfile = ""
ccdred.backup = ""
ccdred.ssfile = "subsets"

# Master bias (the task's defaults: average, minmax rejection of the highest value).
zerocombine ("@bias.lis", output="Zero", ccdtype="zero", process=no, delete=no)

# Darks: bias subtracted into new files, then combined (scaled by exposure).
ccdproc ("@dark.lis", output="@darkout.lis", ccdtype="dark", fixpix=no, overscan=no,
    trim=no, zerocor=yes, darkcor=no, flatcor=no, zero="Zero")
darkcombine ("@darkout.lis", output="Dark", ccdtype="dark", process=no, delete=no)

# Flats: bias and dark subtracted into new files, then combined (scaled by their mode).
ccdproc ("@flat.lis", output="@flatout.lis", ccdtype="flat", fixpix=no, overscan=no,
    trim=no, zerocor=yes, darkcor=yes, flatcor=no, zero="Zero", dark="Dark")
flatcombine ("@flatout.lis", output="Flat", ccdtype="flat", process=no, subsets=no,
    delete=no)

# Science frames: bias, dark and flat, into new files.
ccdproc ("@light.lis", output="@lightout.lis", ccdtype="object", fixpix=no, overscan=no,
    trim=no, zerocor=yes, darkcor=yes, flatcor=yes, zero="Zero", dark="Dark",
    flat="Flat")

logout
