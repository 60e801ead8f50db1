/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Fuzz key slot unwrapping (docs/format/repository.md §3): the input is
 * parsed as JSON (jansson, as kura reads keys/<slot>) and handed to
 * kura_keyslot_unwrap() with a fixed passphrase and repository ID.
 * Properties: no crash or leak; failures only -EBADMSG, -EKEYREJECTED,
 * -EPROTONOSUPPORT or -ENOMEM; on success, wrapping the key again and
 * unwrapping it gives the same master key.
 *
 * Restriction: slots asking for more than 1 MiB of Argon2id memory or more
 * than 2 passes are skipped before the call.  The code accepts up to 4 GiB
 * and 64 passes (legal values), and one such derivation takes seconds to
 * minutes, so the fuzzer would spend its time in Argon2id and time out.  The
 * range checks on mem/passes are still exercised: values below the minimum,
 * negative, non-integer or absent ones reach the code.
 */
#include <jansson.h>

#include "common/kcommon.h"
#include "crypto/kcrypto.h"
#include "fuzz.h"

#define FUZZ_PASSWORD "fuzz-password"
#define FUZZ_REPO_ID "6b7572612d66757a7a2d7265706f2d69642d303030303030303030303030303031"
#define FUZZ_MEM_MAX (1ULL << 20)
#define FUZZ_PASSES_MAX 2

/* Too expensive to derive (see above)?  Only integer values can be. */
static bool too_slow(json_t *slot) {
        json_t *mem = json_object_get(slot, "mem"), *passes = json_object_get(slot, "passes");
        if (json_is_integer(mem) && json_integer_value(mem) > (json_int_t) FUZZ_MEM_MAX)
                return true;
        if (json_is_integer(passes) && json_integer_value(passes) > FUZZ_PASSES_MAX)
                return true;
        return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        json_error_t jerr;
        KuraMasterKey mk, mk2;

        json_t *slot = json_loadb((const char *) data, size, JSON_DECODE_ANY, &jerr);
        if (!slot)
                return 0;
        if (json_is_object(slot) && too_slow(slot)) {
                json_decref(slot);
                return 0;
        }
        memset(&mk, 0xa5, sizeof mk);
        int r = kura_keyslot_unwrap(slot, FUZZ_PASSWORD, FUZZ_REPO_ID, &mk);
        if (r < 0) {
                CHECK(r == -EBADMSG || r == -EKEYREJECTED || r == -EPROTONOSUPPORT || r == -ENOMEM);
                json_decref(slot);
                return 0;
        }
        CHECK(r == 0);

        /* Found a slot that opens: the key must survive a wrap/unwrap cycle. */
        KuraKdfParams p = {.mem_bytes = 8 << 10, .passes = 1};
        json_t *again = NULL;
        r = kura_keyslot_wrap(&mk, FUZZ_PASSWORD, &p, FUZZ_REPO_ID, &again);
        CHECK(r == 0 && again);
        memset(&mk2, 0x5a, sizeof mk2);
        r = kura_keyslot_unwrap(again, FUZZ_PASSWORD, FUZZ_REPO_ID, &mk2);
        CHECK(r == 0 && memcmp(&mk, &mk2, sizeof mk) == 0);
        /* ...and be bound to the repository ID and the passphrase. */
        r = kura_keyslot_unwrap(again, FUZZ_PASSWORD, "another-repository", &mk2);
        CHECK(r == -EKEYREJECTED);
        r = kura_keyslot_unwrap(again, FUZZ_PASSWORD "x", FUZZ_REPO_ID, &mk2);
        CHECK(r == -EKEYREJECTED);
        kura_master_key_wipe(&mk);
        kura_master_key_wipe(&mk2);
        json_decref(again);
        json_decref(slot);
        return 0;
}
