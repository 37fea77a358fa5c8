#ifndef CORRAL_CSHIM_TOOLS_H
#define CORRAL_CSHIM_TOOLS_H

// What the host-side file tools need from Linux that glibc hides from Swift: openat2(2)
// (no glibc wrapper at all) and O_PATH (declared only under _GNU_SOURCE). Nothing here runs
// after fork; these are ordinary calls made by the host process.

#include <stddef.h>
#include <stdint.h>

/// RESOLVE_* bits of openat2(2), from <linux/openat2.h>.
enum {
    COR_RESOLVE_NO_XDEV = 0x01,
    COR_RESOLVE_NO_MAGICLINKS = 0x02,
    COR_RESOLVE_NO_SYMLINKS = 0x04,
    COR_RESOLVE_BENEATH = 0x08,
    COR_RESOLVE_IN_ROOT = 0x10,
};

/// openat2(2) with `flags | O_CLOEXEC`, `mode` and the RESOLVE_* bits in `resolve`.
/// Returns the new descriptor, or -1 with errno set.
int cor_openat2(int dirfd, const char *path, int flags, unsigned int mode, uint64_t resolve);

/// The value of O_PATH, which Swift cannot see: a descriptor that names a file without
/// opening it, so stat-ing a FIFO or a device node never runs its driver's open.
int cor_o_path(void);

/// memmem(3) (a GNU extension glibc hides from Swift): the first occurrence of `needle` in
/// `haystack`, found in linear time, or NULL.
const void *cor_memmem(const void *haystack, size_t haystack_len, const void *needle, size_t needle_len);

#endif
