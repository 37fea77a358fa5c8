#ifndef CORRAL_CSHIM_H
#define CORRAL_CSHIM_H

// The post-fork code of Corral. Everything here runs between fork and execve in a child of
// a multithreaded process, so it uses raw syscalls and libc functions that are
// async-signal-safe only. The parent (Swift) computes the whole plan before forking.

#include <stdint.h>
#include <linux/filter.h>

/// Returns the shim's ABI version; lets tests prove the C target links.
int cor_shim_version(void);

/// Forks a child that sets no_new_privs, loads `prog` as its seccomp filter and then
/// makes the raw syscall `nr` with `arg0`. Returns 0 and stores the syscall's errno (0 on
/// success) in `*out_errno`, or -1 with errno set if the probe itself failed. Used to prove
/// a compiled filter does what its policy says without building a whole sandbox.
int cor_probe_filter(const struct sock_fprog *prog, long nr, long arg0, int *out_errno);

#include "cshim_probe6.h"

#endif
