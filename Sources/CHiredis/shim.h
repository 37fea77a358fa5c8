#ifndef CORRAL_CHIREDIS_SHIM_H
#define CORRAL_CHIREDIS_SHIM_H
#include <hiredis/hiredis.h>
#endif
