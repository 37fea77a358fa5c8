#include "cshim.h"

int cor_shim_version(void) { return 1; }
