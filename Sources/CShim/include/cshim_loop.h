#ifndef CORRAL_CSHIM_LOOP_H
#define CORRAL_CSHIM_LOOP_H

// Loop devices for the workspace disk cap (Sources/Host/Cache/Volume.swift). Not post-fork
// code: these run on an ordinary host thread. They live in C because the ioctl structures
// (struct loop_config, struct loop_info64) and request numbers come from <linux/loop.h>.

#include <stdint.h>

/// Binds `backing_fd` (an open image file) to a free loop device with LO_FLAGS_AUTOCLEAR:
/// LOOP_CTL_GET_FREE, then LOOP_CONFIGURE (or LOOP_SET_FD + LOOP_SET_STATUS64 on kernels
/// before 5.8). A device that another process takes between the two calls is skipped.
/// `name` (may be NULL) is recorded as the device's lo_file_name for `losetup -a`.
///
/// Returns an `O_RDWR | O_CLOEXEC` descriptor of the device and its number in
/// `*out_index`, or -1 with errno set. The device detaches itself when its last opener
/// closes, so keep the descriptor open until the filesystem on it is mounted, then close it:
/// from then on the mount is what keeps the device bound, and unmounting releases it.
int cor_loop_attach(int backing_fd, const char *name, int *out_index);

/// LOOP_CLR_FD on an open loop device. On a device that is still open elsewhere (mounted)
/// the kernel only sets LO_FLAGS_AUTOCLEAR, so it detaches once that user goes away.
int cor_loop_detach(int loop_fd);

/// LOOP_GET_STATUS64: the device and inode of the backing file and the loop flags.
/// Returns 0, or -1 with errno set (ENXIO: the device is not bound).
int cor_loop_status(int loop_fd, uint64_t *out_dev, uint64_t *out_ino, uint32_t *out_flags);

#endif
