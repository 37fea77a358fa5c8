#ifndef CORRAL_CARCHIVE_SHIM_H
#define CORRAL_CARCHIVE_SHIM_H
#include <archive.h>
#include <archive_entry.h>

// The AE_IF* file-type macros are casts, which Swift cannot import.
static const unsigned int cor_ae_ifreg = AE_IFREG;
static const unsigned int cor_ae_ifdir = AE_IFDIR;
static const unsigned int cor_ae_iflnk = AE_IFLNK;
static const unsigned int cor_ae_ifmt = AE_IFMT;
#endif
