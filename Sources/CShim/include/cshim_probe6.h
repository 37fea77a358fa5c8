#ifndef CORRAL_CSHIM_PROBE6_H
#define CORRAL_CSHIM_PROBE6_H

#include <linux/filter.h>

/// What one probed system call did: its errno (0 on success) and raw return value, or the
/// signal that killed the probing child (a filter may kill instead of failing the call).
struct cor_probe_result {
    int err;
    int signal;
    long value;
};

/// The ABIs a probe can use: the native `syscall` instruction, or the i386 `int $0x80`
/// gate, which a filter must not let a process slip through.
enum cor_probe_abi { COR_PROBE_NATIVE = 0, COR_PROBE_INT80 = 1 };

/// Like cor_probe_filter, with all six arguments and a choice of ABI (`int $0x80` passes
/// the first three). A NULL `prog` loads no filter, to learn what the kernel itself does.
/// Returns 0 and fills `*out`, or -1 with errno set if the probe itself failed.
int cor_probe_filter6(const struct sock_fprog *prog, int abi, long nr, const long args[6],
                      struct cor_probe_result *out);

#endif
