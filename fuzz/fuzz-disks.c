/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Fuzz the disk-layout decoder (docs/format/repository.md §7.2): a manifest's
 * "disks" entry as JSON.  Properties: no crash or leak; an accepted layout
 * is sane (label gpt/dos, known sector size, boot area <= 16 MiB, partitions
 * inside the disk), and encoding it again decodes to the same values.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kura/disk.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        json_t *j = json_loadb((const char *) data, size, JSON_REJECT_DUPLICATES, NULL);
        if (!j)
                return 0;
        KuraDiskLayout l, m;
        KuraErr err = {0};
        int r = kura_disk_layout_from_json(j, &l, &err);
        json_decref(j);
        if (r < 0) {
                CHECK(err.code != NULL);
                return 0;
        }
        CHECK(!strcmp(l.label, "gpt") || !strcmp(l.label, "dos"));
        CHECK(l.sector_size == 512 || l.sector_size == 1024 || l.sector_size == 2048 || l.sector_size == 4096);
        CHECK(l.boot_area <= (16u << 20));
        for (size_t i = 0; i < l.nparts; i++)
                CHECK(l.parts[i].start <= l.size && l.parts[i].size <= l.size - l.parts[i].start);
        json_t *again = kura_disk_layout_to_json(&l);
        CHECK(again != NULL);
        r = kura_disk_layout_from_json(again, &m, NULL);
        CHECK(r == 0);
        CHECK(m.nparts == l.nparts && m.size == l.size && !strcmp(m.id, l.id) && m.boot_area == l.boot_area);
        for (size_t i = 0; i < l.nparts; i++)
                CHECK(!memcmp(&m.parts[i], &l.parts[i], sizeof m.parts[i]));
        json_decref(again);
        kura_disk_layout_clear(&l);
        kura_disk_layout_clear(&m);
        return 0;
}
