#define _GNU_SOURCE
#include "cshim_loop.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#ifndef LOOP_CONFIGURE
#define LOOP_CONFIGURE 0x4C0A
#endif

// Binds with the pre-5.8 pair. Between the two calls the device is bound without
// AUTOCLEAR; if the second fails it is unbound again, so no device outlives the call.
static int bind_legacy(int fd, int backing_fd, const struct loop_info64 *info) {
    if (ioctl(fd, LOOP_SET_FD, backing_fd) != 0) return -1;
    if (ioctl(fd, LOOP_SET_STATUS64, info) != 0) {
        int err = errno;
        (void)ioctl(fd, LOOP_CLR_FD, 0);
        errno = err;
        return -1;
    }
    return 0;
}

int cor_loop_attach(int backing_fd, const char *name, int *out_index) {
    int control = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
    if (control < 0) return -1;
    struct loop_config config;
    memset(&config, 0, sizeof config);
    config.fd = (uint32_t)backing_fd;
    config.info.lo_flags = LO_FLAGS_AUTOCLEAR;
    if (name) strncpy((char *)config.info.lo_file_name, name, LO_NAME_SIZE - 1);

    // GET_FREE only names a device that was free a moment ago: another process (losetup,
    // another thread here) may bind it first, and then the bind fails with EBUSY.
    for (int attempt = 0; attempt < 64; attempt++) {
        int index = ioctl(control, LOOP_CTL_GET_FREE);
        if (index < 0) break;
        char path[32];
        snprintf(path, sizeof path, "/dev/loop%d", index);
        int fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0) break;
        int rc = ioctl(fd, LOOP_CONFIGURE, &config);
        // EINVAL/ENOTTY: a kernel without LOOP_CONFIGURE (before 5.8).
        if (rc != 0 && (errno == EINVAL || errno == ENOTTY)) rc = bind_legacy(fd, backing_fd, &config.info);
        if (rc == 0) {
            close(control);
            *out_index = index;
            return fd;
        }
        int err = errno;
        close(fd);
        errno = err;
        if (err != EBUSY) break;
    }
    int err = errno;
    close(control);
    errno = err;
    return -1;
}

int cor_loop_detach(int loop_fd) { return ioctl(loop_fd, LOOP_CLR_FD, 0); }

int cor_loop_status(int loop_fd, uint64_t *out_dev, uint64_t *out_ino, uint32_t *out_flags) {
    struct loop_info64 info;
    memset(&info, 0, sizeof info);
    if (ioctl(loop_fd, LOOP_GET_STATUS64, &info) != 0) return -1;
    *out_dev = info.lo_device;
    *out_ino = info.lo_inode;
    *out_flags = info.lo_flags;
    return 0;
}
