#ifndef CORRAL_CSHIM_NETNS_H
#define CORRAL_CSHIM_NETNS_H

// Sockets in a sandbox's network namespace, made from the host (Sources/Sandbox/Core/
// NetworkNamespace.swift). A socket belongs to the namespace it was created in for its
// whole life, whichever thread or process then binds, connects or accepts on it; so the
// host's egress proxy can listen inside a sandbox, and the API can connect to a port a job
// listens on there, without any host port and without the sandbox seeing the host's
// network.

/// Creates a socket (`domain`, `type` with SOCK_CLOEXEC added, `protocol`) in the network
/// namespace of `ns_fd` (an open `/proc/PID/ns/net`). The switch happens on a short-lived
/// thread of its own, which setns(2)s and ends, so no thread of the caller ever runs in the
/// sandbox's namespace, even for a moment. Returns the descriptor, or -1 with errno set.
int cor_netns_socket(int ns_fd, int domain, int type, int protocol);

#endif
