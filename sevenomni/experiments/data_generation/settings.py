"""Fixed settings of the data generator: its version (part of every cache key and manifest), the xTB
settings every calculation shares, the method names and the default force filter.
"""

SCRIPT_VERSION = "1.0.0"

# xTB settings shared by every calculation.
XTB_ACCURACY = 1.0
XTB_MAX_ITER = 250
ELECTRONIC_TEMPERATURE_K = 300.0
DEFAULT_FORCE_FILTER = 20.0  # eV/A, max per-atom force norm
MAX_MD_RESTARTS = 3

GFN1 = "GFN1-xTB"
GFN2 = "GFN2-xTB"
