#ifndef CORRAL_CSECCOMP_SHIM_H
#define CORRAL_CSECCOMP_SHIM_H
#include <seccomp.h>

// SCMP_ACT_ERRNO and SCMP_ACT_TRACE are function-like macros Swift cannot import.
static inline uint32_t cor_scmp_act_errno(uint16_t e) { return SCMP_ACT_ERRNO(e); }
#endif
