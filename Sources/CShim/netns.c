#define _GNU_SOURCE
#include "cshim_netns.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

struct netns_request {
    int ns_fd, domain, type, protocol;
    int result, error;
};

static void *netns_socket_thread(void *arg) {
    struct netns_request *r = arg;
    // This thread exists only for the switch: it never returns to the host's namespace,
    // it ends.
    if (setns(r->ns_fd, CLONE_NEWNET) != 0) {
        r->error = errno;
        return NULL;
    }
    r->result = socket(r->domain, r->type | SOCK_CLOEXEC, r->protocol);
    if (r->result < 0) r->error = errno;
    return NULL;
}

int cor_netns_socket(int ns_fd, int domain, int type, int protocol) {
    struct netns_request r = {ns_fd, domain, type, protocol, -1, 0};
    pthread_attr_t attr;
    if (pthread_attr_init(&attr) != 0) return -1;
    (void)pthread_attr_setstacksize(&attr, 64 * 1024);
    pthread_t thread;
    int err = pthread_create(&thread, &attr, netns_socket_thread, &r);
    pthread_attr_destroy(&attr);
    if (err != 0) {
        errno = err;
        return -1;
    }
    pthread_join(thread, NULL);
    if (r.result < 0) {
        errno = r.error;
        return -1;
    }
    return r.result;
}
