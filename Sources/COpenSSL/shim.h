#ifndef CORRAL_COPENSSL_SHIM_H
#define CORRAL_COPENSSL_SHIM_H
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

// OpenSSL spells these as macros over SSL_ctrl / SSL_CTX_ctrl, which Swift cannot call.
static inline int cor_ssl_set_sni(SSL *ssl, const char *name) { return (int)SSL_set_tlsext_host_name(ssl, name); }
static inline int cor_ssl_ctx_min_tls12(SSL_CTX *ctx) {
    return (int)SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
}
// Without auto-retry, SSL_read on a blocking socket returns (SSL_ERROR_WANT_READ) after a
// record that carries no application data, instead of blocking for the next one.
static inline void cor_ssl_no_auto_retry(SSL *ssl) { SSL_clear_mode(ssl, SSL_MODE_AUTO_RETRY); }
#endif
