#ifndef CORRAL_CSQLITE_SHIM_H
#define CORRAL_CSQLITE_SHIM_H
#include <sqlite3.h>

// SQLITE_TRANSIENT is a cast of -1 to a function pointer, which Swift cannot import. Binding
// with it makes SQLite copy the bytes before the call returns, so Swift buffers may move.
static inline int cor_sqlite3_bind_text(sqlite3_stmt *s, int i, const char *v, int n) {
    return sqlite3_bind_text(s, i, v, n, SQLITE_TRANSIENT);
}
static inline int cor_sqlite3_bind_blob(sqlite3_stmt *s, int i, const void *v, int n) {
    return sqlite3_bind_blob(s, i, v, n, SQLITE_TRANSIENT);
}
#endif
