/*
 * sczt_writer.c: a self-contained C99 writer of uncompressed Scuzz traces,
 * built from docs/trace-format.md alone. It is the reference for capture
 * shims written in C (the DriverKit DEXT shim): copy the sczt_* functions.
 *
 * trace/tests/file.rs (c_writer) compiles this file, runs it, and checks
 * that scuzz reads back exactly the events below.
 *
 *   cc -std=c99 -Wall -Wextra -o sczt_writer docs/examples/sczt_writer.c
 *   ./sczt_writer out.sczt && scuzz show out.sczt
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- CRC32C (Castagnoli, reflected polynomial 0x82F63B78) ------------- */

static uint32_t crc32c(const uint8_t *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    while (n--) {
        c ^= *p++;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0x82f63b78u & (0u - (c & 1u)));
    }
    return ~c;
}

/* ---- A growable byte buffer for one frame body ------------------------- */

struct buf {
    uint8_t *p;
    size_t len, cap;
    int failed;
};

static void put(struct buf *b, const void *src, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            b->failed = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}

static void put_u8(struct buf *b, uint8_t v) { put(b, &v, 1); }

/* Little-endian, `bytes` wide. */
static void put_le(struct buf *b, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++)
        put_u8(b, (uint8_t)(v >> (8 * i)));
}

/* bincode 2 varint: <= 250 in one byte, else a tag (251/252/253) and the
 * value as u16/u32/u64 little-endian. Used for every integer wider than a
 * byte, every length and every enum variant index. */
static void put_varint(struct buf *b, uint64_t v)
{
    if (v <= 250) {
        put_u8(b, (uint8_t)v);
    } else if (v <= 0xffffu) {
        put_u8(b, 251);
        put_le(b, v, 2);
    } else if (v <= 0xffffffffu) {
        put_u8(b, 252);
        put_le(b, v, 4);
    } else {
        put_u8(b, 253);
        put_le(b, v, 8);
    }
}

/* Signed integers: zigzag (0, -1, 1, -2 ... -> 0, 1, 2, 3 ...), then varint. */
static void put_zigzag(struct buf *b, int64_t v)
{
    uint64_t u = (uint64_t)v;
    put_varint(b, v < 0 ? (~u << 1) | 1u : u << 1);
}

/* Vec<u8> and String: varint length, then the bytes. */
static void put_bytes(struct buf *b, const void *p, size_t n)
{
    put_varint(b, n);
    put(b, p, n);
}

/* ---- Frames ------------------------------------------------------------- */

/* One frame: len u32 LE, crc32c(len bytes) u32 LE, crc32c(body) u32 LE,
 * body. Written with one fwrite so a crash leaves at most one torn frame. */
static int put_frame(FILE *f, const struct buf *body)
{
    if (body->failed || body->len > (63u << 20))
        return -1;
    struct buf fr = {0};
    uint8_t len[4];
    for (int i = 0; i < 4; i++)
        len[i] = (uint8_t)(body->len >> (8 * i));
    put(&fr, len, 4);
    put_le(&fr, crc32c(len, 4), 4);
    put_le(&fr, crc32c(body->p, body->len), 4);
    put(&fr, body->p, body->len);
    int ok = !fr.failed && fwrite(fr.p, 1, fr.len, f) == fr.len;
    free(fr.p);
    return ok ? 0 : -1;
}

/* ---- The trace API ------------------------------------------------------ */

enum sczt_payload_mode { SCZT_NONE = 0, SCZT_FULL = 1, SCZT_DIGEST = 2, SCZT_PATTERN = 3 };
enum sczt_dir { SCZT_DIR_NONE = 0, SCZT_TO_DEVICE = 1, SCZT_FROM_DEVICE = 2 };

struct sczt_segment {
    uint64_t addr;
    uint32_t len;
};

struct sczt_submit {
    uint64_t seq, time_ns;
    uint32_t target;
    uint64_t lun, tag;
    uint8_t attr; /* 0 simple, 1 ordered, 2 head of queue, 3 ACA */
    const uint8_t *cdb;
    size_t cdb_len;
    enum sczt_dir dir;
    uint32_t xfer_len;
    const struct sczt_segment *sg;
    size_t sg_len;
    /* Payload: Digests when n_digests > 0, else None. */
    uint32_t granularity;
    const uint32_t *digests;
    size_t n_digests;
};

struct sczt_complete {
    uint64_t seq, time_ns;
    uint8_t response; /* 0 task complete, 1 delivery failure, 2 incomplete */
    uint8_t status;   /* SCSI status byte */
    const uint8_t *sense;
    size_t sense_len;
    uint32_t bytes_transferred;
    int64_t residual;
};

/* Preamble and header frame. `labels` is NULL or a NULL-terminated list of
 * key, value, key, value... sorted by key (the header holds an ordered map). */
static int sczt_begin(FILE *f, const char *producer, uint64_t created_unix_s,
                      uint32_t block_size, uint64_t capacity_blocks,
                      enum sczt_payload_mode mode, const char *const *labels)
{
    uint8_t pre[16] = {'S', 'C', 'Z', 'T', 1, 0, 0, 0, 0 /* uncompressed */, 0, 0, 0};
    uint32_t c = crc32c(pre, 12);
    for (int i = 0; i < 4; i++)
        pre[12 + i] = (uint8_t)(c >> (8 * i));
    if (fwrite(pre, 1, 16, f) != 16)
        return -1;

    struct buf b = {0};
    put_bytes(&b, producer, strlen(producer));
    put_varint(&b, created_unix_s);
    put_varint(&b, block_size);
    put_varint(&b, capacity_blocks);
    put_u8(&b, 0); /* hba: None */
    put_varint(&b, (uint64_t)mode);
    size_t n = 0;
    while (labels && labels[2 * n])
        n++;
    put_varint(&b, n);
    for (size_t i = 0; i < n; i++) {
        put_bytes(&b, labels[2 * i], strlen(labels[2 * i]));
        put_bytes(&b, labels[2 * i + 1], strlen(labels[2 * i + 1]));
    }
    int r = put_frame(f, &b);
    free(b.p);
    return r;
}

static int sczt_submit(FILE *f, const struct sczt_submit *s)
{
    struct buf b = {0};
    put_varint(&b, 0); /* Event::Submit */
    put_varint(&b, s->seq);
    put_varint(&b, s->time_ns);
    put_varint(&b, s->target);
    put_varint(&b, s->lun);
    put_varint(&b, s->tag);
    put_varint(&b, s->attr);
    put_bytes(&b, s->cdb, s->cdb_len);
    put_varint(&b, (uint64_t)s->dir);
    put_varint(&b, s->xfer_len);
    put_varint(&b, s->sg_len);
    for (size_t i = 0; i < s->sg_len; i++) {
        put_varint(&b, s->sg[i].addr);
        put_varint(&b, s->sg[i].len);
    }
    if (s->n_digests) {
        put_varint(&b, 2); /* Payload::Digests */
        put_varint(&b, s->granularity);
        put_varint(&b, s->n_digests);
        for (size_t i = 0; i < s->n_digests; i++)
            put_varint(&b, s->digests[i]);
    } else {
        put_varint(&b, 0); /* Payload::None */
    }
    int r = put_frame(f, &b);
    free(b.p);
    return r;
}

static int sczt_complete(FILE *f, const struct sczt_complete *c)
{
    struct buf b = {0};
    put_varint(&b, 1); /* Event::Complete */
    put_varint(&b, c->seq);
    put_varint(&b, c->time_ns);
    put_varint(&b, c->response);
    put_u8(&b, c->status); /* u8: one raw byte */
    put_bytes(&b, c->sense, c->sense_len);
    put_varint(&b, c->bytes_transferred);
    put_zigzag(&b, c->residual);
    put_varint(&b, 0); /* Payload::None */
    int r = put_frame(f, &b);
    free(b.p);
    return r;
}

static int sczt_power_loss(FILE *f, uint64_t time_ns)
{
    struct buf b = {0};
    put_varint(&b, 2); /* Event::PowerLoss */
    put_varint(&b, time_ns);
    int r = put_frame(f, &b);
    free(b.p);
    return r;
}

static int sczt_note(FILE *f, uint64_t time_ns, const char *text)
{
    struct buf b = {0};
    put_varint(&b, 4); /* Event::Note */
    put_varint(&b, time_ns);
    put_bytes(&b, text, strlen(text));
    int r = put_frame(f, &b);
    free(b.p);
    return r;
}

/* The end frame: a frame with an empty body. */
static int sczt_end(FILE *f)
{
    struct buf b = {0};
    return put_frame(f, &b);
}

/* ---- Example: what trace/tests/file.rs expects -------------------------- */

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUT.sczt\n", argv[0]);
        return 2;
    }
    FILE *f = fopen(argv[1], "wb");
    if (!f) {
        perror(argv[1]);
        return 1;
    }
    static const char *const labels[] = {"host", "mac-pro", "shim", "example", NULL};
    int e = sczt_begin(f, "sczt_writer.c", 1764028800u, 4096, 262144, SCZT_DIGEST, labels);

    /* WRITE(10) lba=2048 blocks=2, two segments, one above 4 GiB. */
    static const uint8_t write10[10] = {0x2a, 0, 0, 0, 0x08, 0, 0, 0, 2, 0};
    static const struct sczt_segment sg[2] = {{0xfffff000u, 4096}, {0x120000000ull, 4096}};
    static const uint32_t digests[2] = {0x12345678u, 0x9abcdef0u};
    struct sczt_submit w = {.seq = 0, .time_ns = 1000, .target = 0, .lun = 0, .tag = 1,
                            .attr = 0, .cdb = write10, .cdb_len = 10, .dir = SCZT_TO_DEVICE,
                            .xfer_len = 8192, .sg = sg, .sg_len = 2, .granularity = 4096,
                            .digests = digests, .n_digests = 2};
    e |= sczt_submit(f, &w);

    /* SYNCHRONIZE CACHE(10), whole medium. */
    static const uint8_t sync10[10] = {0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    struct sczt_submit s = {.seq = 1, .time_ns = 2000, .tag = 2, .cdb = sync10, .cdb_len = 10};
    e |= sczt_submit(f, &s);

    struct sczt_complete wc = {.seq = 0, .time_ns = 80000, .bytes_transferred = 8192};
    e |= sczt_complete(f, &wc);
    /* CHECK CONDITION, fixed sense: MEDIUM ERROR 0C/00 (write error). */
    static const uint8_t sense[18] = {0x70, 0, 0x03, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x0c, 0};
    struct sczt_complete sc = {.seq = 1, .time_ns = 300000, .status = 0x02, .sense = sense,
                               .sense_len = 18, .residual = -1};
    e |= sczt_complete(f, &sc);
    e |= sczt_note(f, 400000, "cut the power");
    e |= sczt_power_loss(f, 500000);
    e |= sczt_end(f);
    if (fclose(f) != 0)
        e = -1;
    if (e) {
        fprintf(stderr, "%s: write failed\n", argv[1]);
        return 1;
    }
    return 0;
}
