/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What every fuzz target shares: libFuzzer's entry point and CHECK(), which
 * aborts (so that libFuzzer, or replay.c under ASan, reports the input) when
 * a property of the code under test is violated.
 */
#ifndef KURA_FUZZ_H
#define KURA_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                                  \
        do {                                                                                      \
                if (!(c)) {                                                                       \
                        fprintf(stderr, "%s:%d: property violated: %s\n", __FILE__, __LINE__, #c); \
                        abort();                                                                  \
                }                                                                                 \
        } while (0)

#endif
