/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/kcommon.h"

static void test_hex_roundtrip(void **state) {
        (void) state;
        uint8_t in[5] = {0x00, 0x12, 0xab, 0xff, 0x7f}, out[5];
        char hex[11];
        kura_hex(in, 5, hex);
        assert_string_equal(hex, "0012abff7f");
        assert_int_equal(kura_unhex(hex, out, 5), 0);
        assert_memory_equal(in, out, 5);
        assert_int_equal(kura_unhex("0012abff7", out, 5), -EINVAL);
        assert_int_equal(kura_unhex("0012abff7g", out, 5), -EINVAL);
}

static void test_bounded_reader(void **state) {
        (void) state;
        uint8_t b[6] = {1, 2, 0, 0, 0, 9};
        KuraBufReader br;
        uint8_t u;
        uint32_t v;
        kura_br_init(&br, b, sizeof b);
        assert_int_equal(kura_br_u8(&br, &u), 0);
        assert_int_equal(u, 1);
        assert_int_equal(kura_br_le32(&br, &v), 0);
        assert_int_equal(v, 2);
        assert_int_equal(kura_br_le32(&br, &v), -EBADMSG);
        assert_int_equal(kura_br_u8(&br, &u), 0);
        assert_int_equal(u, 9);
        assert_int_equal(kura_br_u8(&br, &u), -EBADMSG);
}

static void test_time_roundtrip(void **state) {
        (void) state;
        char buf[64];
        int64_t t = 1795000000123456789LL, back;
        kura_format_time(t, buf, sizeof buf);
        assert_int_equal(kura_parse_time(buf, &back), 0);
        assert_true(back == t);
        assert_int_equal(kura_parse_time("2026-13-01", &back), -EINVAL);
}

static void test_parse_size(void **state) {
        (void) state;
        uint64_t v;
        assert_int_equal(kura_parse_size("1M", &v), 0);
        assert_true(v == 1048576);
        assert_int_equal(kura_parse_size("256KiB", &v), 0);
        assert_true(v == 262144);
        assert_int_equal(kura_parse_size("12", &v), 0);
        assert_true(v == 12);
        assert_int_equal(kura_parse_size("x", &v), -EINVAL);
        assert_int_equal(kura_parse_size("1Q", &v), -EINVAL);
        assert_int_equal(kura_parse_size("99999999999999999999", &v), -ERANGE);
}

static void test_err_first_wins(void **state) {
        (void) state;
        KuraErr e = {0};
        assert_int_equal(kura_err(&e, ENOENT, KURA_E_REPO_NOT_FOUND, "create it", "no repo at %s", "/x"), -ENOENT);
        kura_err(&e, EIO, KURA_E_INTERNAL, "", "later");
        assert_string_equal(e.code, KURA_E_REPO_NOT_FOUND);
        assert_string_equal(e.message, "no repo at /x");
        assert_int_equal(kura_err(NULL, 5, KURA_E_INTERNAL, "", "x"), -5);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_hex_roundtrip),
                cmocka_unit_test(test_bounded_reader),
                cmocka_unit_test(test_time_roundtrip),
                cmocka_unit_test(test_parse_size),
                cmocka_unit_test(test_err_first_wins),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
