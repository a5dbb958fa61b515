/*
 * A stand-in for a DriverKit HBA driver's command paths, driving the capture
 * shim exactly where docs/dext-capture.md says a DEXT calls it. Writes two
 * ring dumps: argv[1] (single-task and bundled paths, SG lists, sense) and
 * argv[2] (a small ring that wraps, with a completion whose submit was
 * overwritten).
 */
#include "scuzz_capture.h"

#include <stdio.h>
#include <string.h>

static uint64_t ring_a[(64 + 64 * 256) / 8];
static uint64_t ring_b[(64 + 16 * 256) / 8];

static const uint8_t lun0[8] = {0, 0, 0, 0, 0, 0, 0, 0};
static const uint8_t lun3[8] = {0, 3, 0, 0, 0, 0, 0, 0};

static int dump(const char *path, const void *mem, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL) {
        perror(path);
        return 1;
    }
    if (fwrite(mem, 1, len, f) != len) {
        perror(path);
        fclose(f);
        return 1;
    }
    return fclose(f) != 0;
}

/* UserProcessParallelTask: one WRITE(10) of 8 blocks at LBA 0x1000. */
static void single_write(void *ring, uint64_t now)
{
    uint8_t cdb[10] = {0x2a, 0, 0, 0, 0x10, 0, 0, 0, 8, 0};
    scuzz_sg_entry sg[3] = {{0x10000000u, 1024}, {0x10002000u, 2048}, {0x1fffff000ull, 1024}};
    scuzz_capture_submit(ring, now, 0x101, 0, lun0, 7, 0, cdb, sizeof cdb, 1, 4096,
                         0x80000000u, 30000);
    /* ...the DEXT builds the controller's SG list from fBufferIOVMAddr... */
    scuzz_capture_sg(ring, now + 100, 0x101, sg, 3);
    /* ...and ParallelTaskCompletion reports GOOD, task complete. */
    scuzz_capture_complete(ring, now + 5000, 0x101, 0, 2, 4096, NULL, 0);
}

/* A READ(16) with a 20-entry SG list and a CHECK CONDITION. */
static void single_read_check(void *ring, uint64_t now)
{
    uint8_t cdb[16] = {0x88, 0, 0, 0, 0, 0, 0, 0, 0, 0x20, 0, 0, 0, 0x28, 0, 0};
    uint8_t sense[18] = {0x70, 0, 0x03, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x11, 0, 0, 0, 0, 0};
    scuzz_sg_entry sg[20];
    int i;
    for (i = 0; i < 20; i++) {
        sg[i].address = 0x20000000u + (uint64_t)i * 0x2000u;
        sg[i].length = 1024;
    }
    scuzz_capture_submit(ring, now, 0x102, 0, lun3, 8, 1, cdb, sizeof cdb, 2, 20480,
                         0x80100000u, 30000);
    scuzz_capture_sg(ring, now + 100, 0x102, sg, 20);
    scuzz_capture_complete(ring, now + 9000, 0x102, 2, 2, 0, sense, sizeof sense);
}

/* UserProcessBundledParallelTasks with three slots, then
 * BundledParallelTaskCompletion for all three. */
static void bundled(void *ring, uint64_t now)
{
    uint16_t slots[3] = {4, 5, 9};
    int i;
    scuzz_capture_bundle(ring, now, 1, slots, 3);
    for (i = 0; i < 3; i++) {
        uint8_t cdb[10] = {0x2a, 0, 0, 0, 0x20, (uint8_t)(i * 8), 0, 0, 8, 0};
        scuzz_sg_entry sg[2];
        sg[0].address = 0x30000000u + (uint64_t)i * 0x10000u;
        sg[0].length = 2048;
        sg[1].address = 0x30008000u + (uint64_t)i * 0x10000u;
        sg[1].length = 2048;
        scuzz_capture_submit_bundled(ring, now + 10 + (uint64_t)i, slots[i], 0x200u + (uint64_t)i, 0,
                                     lun0, 20u + (uint64_t)i, 0, cdb, sizeof cdb, 1, 4096,
                                     0x80200000u + (uint64_t)i * 0x1000u, 30000);
        scuzz_capture_sg(ring, now + 20 + (uint64_t)i, 0x200u + (uint64_t)i, sg, 2);
    }
    for (i = 0; i < 3; i++) {
        scuzz_capture_complete_bundled(ring, now + 7000 + (uint64_t)i, slots[i], 0x200u + (uint64_t)i,
                                       0, 2, 4096, NULL, 0);
    }
    scuzz_capture_bundle(ring, now + 7010, 2, slots, 3);
}

/* SYNCHRONIZE CACHE(10) that is still in flight when the ring is dumped. */
static void inflight_flush(void *ring, uint64_t now)
{
    uint8_t cdb[10] = {0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    scuzz_capture_submit(ring, now, 0x300, 0, lun0, 30, 1, cdb, sizeof cdb, 0, 0, 0, 60000);
}

/* A long READ submitted first, then 20 short writes that wrap the 16-slot
 * ring, then the long READ completes: its submit is gone. */
static void wrap(void *ring, uint64_t now)
{
    uint8_t read10[10] = {0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0};
    int i;
    scuzz_capture_submit(ring, now, 0x999, 0, lun0, 99, 0, read10, sizeof read10, 2, 512,
                         0x80000000u, 30000);
    for (i = 0; i < 20; i++) {
        uint8_t cdb[10] = {0x2a, 0, 0, 0, 0, (uint8_t)i, 0, 0, 1, 0};
        uint64_t t = now + 100 + (uint64_t)i * 100;
        scuzz_capture_submit(ring, t, 0x400u + (uint64_t)i, 0, lun0, (uint64_t)i, 0, cdb,
                             sizeof cdb, 1, 512, 0x80001000u, 30000);
        scuzz_capture_complete(ring, t + 50, 0x400u + (uint64_t)i, 0, 2, 512, NULL, 0);
    }
    scuzz_capture_complete(ring, now + 5000, 0x999, 0, 2, 512, NULL, 0);
}

int main(int argc, char **argv)
{
    uint64_t t0 = 1000000000ull;
    if (argc != 3) {
        fprintf(stderr, "usage: %s RING_A RING_B\n", argv[0]);
        return 2;
    }
    if (scuzz_capture_init(ring_a, sizeof ring_a, t0) != 64 ||
        scuzz_capture_init(ring_b, sizeof ring_b, t0) != 16) {
        fprintf(stderr, "init failed\n");
        return 1;
    }
    if (scuzz_capture_init((uint8_t *)ring_a + 1, 1000, t0) != 0) {
        fprintf(stderr, "misaligned ring accepted\n");
        return 1;
    }
    single_write(ring_a, t0 + 1000);
    single_read_check(ring_a, t0 + 20000);
    bundled(ring_a, t0 + 40000);
    inflight_flush(ring_a, t0 + 60000);
    wrap(ring_b, t0);
    return dump(argv[1], ring_a, sizeof ring_a) || dump(argv[2], ring_b, sizeof ring_b);
}
