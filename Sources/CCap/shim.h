#ifndef CORRAL_CCAP_SHIM_H
#define CORRAL_CCAP_SHIM_H
#include <sys/capability.h>
#endif
