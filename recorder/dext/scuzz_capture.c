/*
 * scuzz_capture.c - ring-buffer writer behind scuzz_capture.h.
 *
 * Part of Scuzz (MIT OR Apache-2.0). See the header for the layout and the
 * concurrency contract; docs/dext-capture.md for where a DEXT calls it.
 */
#include "scuzz_capture.h"

#include <string.h>

/* C99 has no _Static_assert: a negative array size fails the build. */
#define SCUZZ_STATIC_ASSERT(cond, name) typedef char scuzz_assert_##name[(cond) ? 1 : -1]

SCUZZ_STATIC_ASSERT(sizeof(uint64_t) == 8, u64_is_8_bytes);
SCUZZ_STATIC_ASSERT(48 + SCUZZ_SG_PER_RECORD * 16 <= SCUZZ_CAPTURE_SLOT_SIZE, sg_record_fits);
SCUZZ_STATIC_ASSERT(48 + SCUZZ_SENSE_STORED_MAX <= SCUZZ_CAPTURE_SLOT_SIZE, sense_fits);
SCUZZ_STATIC_ASSERT(36 + 2 * SCUZZ_BUNDLE_MAX <= SCUZZ_CAPTURE_SLOT_SIZE, bundle_fits);
SCUZZ_STATIC_ASSERT(SCUZZ_CAPTURE_HEADER_LEN % 8 == 0, header_keeps_alignment);

#define HDR_WRITE_INDEX 16u
#define HDR_WRAP_COUNT 24u
#define HDR_SLOT_COUNT 12u

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    put_u16(p, (uint16_t)v);
    put_u16(p + 2, (uint16_t)(v >> 16));
}

static void put_u64(uint8_t *p, uint64_t v)
{
    put_u32(p, (uint32_t)v);
    put_u32(p + 4, (uint32_t)(v >> 32));
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* A u64 in the ring's (little-endian) byte order, as the host stores it. */
static uint64_t to_ring_order(uint64_t v)
{
#if defined(__BYTE_ORDER__) && defined(__ORDER_BIG_ENDIAN__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return __builtin_bswap64(v);
#else
    return v;
#endif
}

static uint64_t reserve_index(uint8_t *ring)
{
    uint64_t *wi = (uint64_t *)(void *)(ring + HDR_WRITE_INDEX);
#if (defined(__GNUC__) || defined(__clang__)) && !defined(SCUZZ_CAPTURE_SINGLE_PRODUCER)
    return to_ring_order(__atomic_fetch_add(wi, to_ring_order(1), __ATOMIC_RELAXED));
#else
    uint64_t cur = to_ring_order(*wi);
    *wi = to_ring_order(cur + 1);
    return cur;
#endif
}

static void bump_wrap(uint8_t *ring)
{
    uint64_t *wc = (uint64_t *)(void *)(ring + HDR_WRAP_COUNT);
#if (defined(__GNUC__) || defined(__clang__)) && !defined(SCUZZ_CAPTURE_SINGLE_PRODUCER)
    (void)__atomic_fetch_add(wc, to_ring_order(1), __ATOMIC_RELAXED);
#else
    *wc = to_ring_order(to_ring_order(*wc) + 1);
#endif
}

static void store_stamp(uint8_t *slot, uint64_t stamp)
{
    uint64_t *s = (uint64_t *)(void *)slot;
#if (defined(__GNUC__) || defined(__clang__)) && !defined(SCUZZ_CAPTURE_SINGLE_PRODUCER)
    __atomic_store_n(s, to_ring_order(stamp), __ATOMIC_RELEASE);
#else
    *s = to_ring_order(stamp);
#endif
}

/* Reserves the next slot, fills the common part and returns it; the caller
 * fills the rest and publishes with store_stamp(slot, *index + 1). */
static uint8_t *begin(void *ring, uint64_t *index, uint8_t kind, uint8_t path,
                      uint16_t bundle_slot, uint64_t task_id, uint64_t time_ns)
{
    uint8_t *r = (uint8_t *)ring;
    uint32_t count = get_u32(r + HDR_SLOT_COUNT);
    uint8_t *slot;
    if (count == 0) {
        return NULL;
    }
    *index = reserve_index(r);
    if ((*index + 1) % count == 0) {
        bump_wrap(r);
    }
    slot = r + SCUZZ_CAPTURE_HEADER_LEN + (size_t)(*index % count) * SCUZZ_CAPTURE_SLOT_SIZE;
    store_stamp(slot, 0);
    memset(slot + 8, 0, SCUZZ_CAPTURE_SLOT_SIZE - 8);
    slot[8] = kind;
    slot[9] = path;
    put_u16(slot + 10, bundle_slot);
    put_u64(slot + 16, task_id);
    put_u64(slot + 24, time_ns);
    return slot;
}

uint32_t scuzz_capture_init(void *mem, size_t len, uint64_t time_ns)
{
    uint8_t *r = (uint8_t *)mem;
    size_t slots;
    if (r == NULL || ((uintptr_t)mem & 7u) != 0 || len < SCUZZ_CAPTURE_HEADER_LEN + SCUZZ_CAPTURE_SLOT_SIZE) {
        return 0;
    }
    slots = (len - SCUZZ_CAPTURE_HEADER_LEN) / SCUZZ_CAPTURE_SLOT_SIZE;
    if (slots > 0xffffffffu) {
        slots = 0xffffffffu;
    }
    memset(r, 0, SCUZZ_CAPTURE_HEADER_LEN + slots * SCUZZ_CAPTURE_SLOT_SIZE);
    memcpy(r, SCUZZ_CAPTURE_MAGIC, 4);
    put_u16(r + 4, (uint16_t)SCUZZ_CAPTURE_VERSION);
    put_u16(r + 6, (uint16_t)SCUZZ_CAPTURE_HEADER_LEN);
    put_u32(r + 8, SCUZZ_CAPTURE_SLOT_SIZE);
    put_u32(r + HDR_SLOT_COUNT, (uint32_t)slots);
    put_u64(r + 32, time_ns);
    return (uint32_t)slots;
}

static void submit(void *ring, uint8_t path, uint16_t slot_index, uint64_t time_ns,
                   uint64_t task_id, uint64_t target_id, const uint8_t lun[8], uint64_t tag,
                   uint8_t task_attribute, const uint8_t *cdb, uint8_t cdb_len,
                   uint8_t direction, uint64_t requested_transfer_count,
                   uint64_t buffer_iovm_addr, uint32_t timeout_ms)
{
    uint64_t index;
    uint8_t *s = begin(ring, &index, SCUZZ_KIND_SUBMIT, path, slot_index, task_id, time_ns);
    if (s == NULL) {
        return;
    }
    put_u64(s + 32, target_id);
    if (lun != NULL) {
        memcpy(s + 40, lun, 8);
    }
    put_u64(s + 48, tag);
    put_u64(s + 56, requested_transfer_count);
    put_u64(s + 64, buffer_iovm_addr);
    put_u32(s + 72, timeout_ms);
    if (cdb_len > 16) {
        cdb_len = 16;
    }
    if (cdb == NULL) {
        cdb_len = 0;
    }
    s[76] = cdb_len;
    s[77] = direction;
    s[78] = task_attribute;
    if (cdb_len > 0) {
        memcpy(s + 80, cdb, cdb_len);
    }
    store_stamp(s, index + 1);
}

void scuzz_capture_submit(void *ring, uint64_t time_ns, uint64_t task_id,
                          uint64_t target_id, const uint8_t lun[8],
                          uint64_t tag, uint8_t task_attribute,
                          const uint8_t *cdb, uint8_t cdb_len,
                          uint8_t direction,
                          uint64_t requested_transfer_count,
                          uint64_t buffer_iovm_addr, uint32_t timeout_ms)
{
    submit(ring, SCUZZ_PATH_SINGLE, 0, time_ns, task_id, target_id, lun, tag, task_attribute,
           cdb, cdb_len, direction, requested_transfer_count, buffer_iovm_addr, timeout_ms);
}

void scuzz_capture_submit_bundled(void *ring, uint64_t time_ns,
                                  uint16_t slot_index, uint64_t task_id,
                                  uint64_t target_id, const uint8_t lun[8],
                                  uint64_t tag, uint8_t task_attribute,
                                  const uint8_t *cdb, uint8_t cdb_len,
                                  uint8_t direction,
                                  uint64_t requested_transfer_count,
                                  uint64_t buffer_iovm_addr,
                                  uint32_t timeout_ms)
{
    submit(ring, SCUZZ_PATH_BUNDLED, slot_index, time_ns, task_id, target_id, lun, tag,
           task_attribute, cdb, cdb_len, direction, requested_transfer_count,
           buffer_iovm_addr, timeout_ms);
}

void scuzz_capture_sg(void *ring, uint64_t time_ns, uint64_t task_id,
                      const scuzz_sg_entry *segments, uint32_t count)
{
    uint32_t first = 0;
    do {
        uint64_t index;
        uint32_t n = count - first;
        uint32_t i;
        uint8_t *s;
        if (n > SCUZZ_SG_PER_RECORD) {
            n = SCUZZ_SG_PER_RECORD;
        }
        s = begin(ring, &index, SCUZZ_KIND_SG, SCUZZ_PATH_SINGLE, 0, task_id, time_ns);
        if (s == NULL) {
            return;
        }
        put_u32(s + 32, count);
        put_u32(s + 36, first);
        put_u32(s + 40, segments == NULL ? 0 : n);
        for (i = 0; segments != NULL && i < n; i++) {
            put_u64(s + 48 + 16 * i, segments[first + i].address);
            put_u32(s + 56 + 16 * i, segments[first + i].length);
        }
        store_stamp(s, index + 1);
        first += n;
    } while (segments != NULL && first < count);
}

static void complete(void *ring, uint8_t path, uint16_t slot_index, uint64_t time_ns,
                     uint64_t task_id, uint8_t completion_status, uint8_t service_response,
                     uint64_t bytes_transferred, const uint8_t *sense, uint8_t sense_len)
{
    uint64_t index;
    uint8_t stored = sense_len;
    uint8_t *s = begin(ring, &index, SCUZZ_KIND_COMPLETE, path, slot_index, task_id, time_ns);
    if (s == NULL) {
        return;
    }
    if (sense == NULL) {
        stored = 0;
    }
    if (stored > SCUZZ_SENSE_STORED_MAX) {
        stored = (uint8_t)SCUZZ_SENSE_STORED_MAX;
    }
    put_u64(s + 32, bytes_transferred);
    s[40] = completion_status;
    s[41] = service_response;
    s[42] = sense_len;
    s[43] = stored;
    if (stored > 0) {
        memcpy(s + 48, sense, stored);
    }
    store_stamp(s, index + 1);
}

void scuzz_capture_complete(void *ring, uint64_t time_ns, uint64_t task_id,
                            uint8_t completion_status,
                            uint8_t service_response,
                            uint64_t bytes_transferred, const uint8_t *sense,
                            uint8_t sense_len)
{
    complete(ring, SCUZZ_PATH_SINGLE, 0, time_ns, task_id, completion_status,
             service_response, bytes_transferred, sense, sense_len);
}

void scuzz_capture_complete_bundled(void *ring, uint64_t time_ns,
                                    uint16_t slot_index, uint64_t task_id,
                                    uint8_t completion_status,
                                    uint8_t service_response,
                                    uint64_t bytes_transferred,
                                    const uint8_t *sense, uint8_t sense_len)
{
    complete(ring, SCUZZ_PATH_BUNDLED, slot_index, time_ns, task_id, completion_status,
             service_response, bytes_transferred, sense, sense_len);
}

void scuzz_capture_bundle(void *ring, uint64_t time_ns, uint8_t phase,
                          const uint16_t *slot_indices, uint16_t count)
{
    uint64_t index;
    uint16_t i;
    uint16_t n = count;
    uint8_t *s = begin(ring, &index, SCUZZ_KIND_BUNDLE, SCUZZ_PATH_BUNDLED, 0, 0, time_ns);
    if (s == NULL) {
        return;
    }
    if (n > SCUZZ_BUNDLE_MAX) {
        n = (uint16_t)SCUZZ_BUNDLE_MAX;
    }
    if (slot_indices == NULL) {
        n = 0;
    }
    s[32] = phase;
    put_u16(s + 34, count);
    for (i = 0; i < n; i++) {
        put_u16(s + 36 + 2 * i, slot_indices[i]);
    }
    store_stamp(s, index + 1);
}
