/*
 * scuzz_capture.h - capture the CDB stream of a DriverKit SCSI HBA driver.
 *
 * Part of Scuzz (MIT OR Apache-2.0). Call these from an
 * IOUserSCSIParallelInterfaceController subclass; `scuzz import dext` turns
 * a dump of the ring into a Scuzz trace. docs/dext-capture.md shows where
 * each call goes, for the single-task and the bundled path.
 *
 * Properties a DEXT can rely on:
 *   - C99, freestanding apart from memcpy/memset; no allocation, no locks,
 *     no system calls, nothing that sleeps: safe on any dispatch queue and
 *     in completion paths.
 *   - Every function takes the task's fields as plain arguments. Nothing
 *     here mirrors Apple's SCSIUserParallelTask or SCSIUserParallelResponse
 *     layout (their enums have no fixed underlying type), so an SDK change
 *     cannot silently shift a field.
 *   - Records go into a caller-provided ring; when the ring is full the
 *     oldest records are overwritten. Capture never fails and never blocks.
 *
 * Concurrency: each record reserves its slot with one atomic fetch-and-add
 * on the ring's write index (GCC/Clang __atomic builtins), fills it, then
 * publishes it by storing its stamp with release ordering. Any number of
 * queues may therefore call concurrently. A reader that dumps the ring while
 * producers run may see a slot being filled: its stamp does not match its
 * position yet, and the importer skips it (reported, never misread).
 * Without GCC/Clang builtins (define SCUZZ_CAPTURE_SINGLE_PRODUCER), the
 * index update is a plain add and all calls must come from one queue.
 *
 * Ring layout (all integers little-endian, the byte order of every Mac):
 *
 *   header, 64 bytes at offset 0
 *     0  u8[4]  magic "SZCR"
 *     4  u16    version (1)
 *     6  u16    header_len (64)
 *     8  u32    slot_size (256)
 *    12  u32    slot_count
 *    16  u64    write_index: slots reserved since init (monotonic)
 *    24  u64    wrap_count: times the index passed slot_count (informative)
 *    32  u64    init_time_ns: time passed to scuzz_capture_init
 *    40  u8[24] reserved, zero
 *   slot i (0 <= i < slot_count) at 64 + i * 256
 *     0  u64    stamp: index + 1 of the record in it (0: never written);
 *               written last, so a stamp that does not match the slot's
 *               position means the slot is being (re)written
 *     8  u8     kind: 1 submit, 2 sg, 3 complete, 4 bundle
 *     9  u8     path: 0 single-task (UserProcessParallelTask),
 *               1 bundled (UserProcessBundledParallelTasks)
 *    10  u16    bundle slot index (bundled path), else 0
 *    12  u32    reserved
 *    16  u64    task_id (fControllerTaskIdentifier)
 *    24  u64    time_ns (the caller's clock, ns)
 *    32  ...    kind-specific, see SCUZZ_* offsets below
 */
#ifndef SCUZZ_CAPTURE_H
#define SCUZZ_CAPTURE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SCUZZ_CAPTURE_MAGIC "SZCR"
#define SCUZZ_CAPTURE_VERSION 1u
#define SCUZZ_CAPTURE_HEADER_LEN 64u
#define SCUZZ_CAPTURE_SLOT_SIZE 256u

/* Record kinds (slot byte 8). */
#define SCUZZ_KIND_SUBMIT 1u
#define SCUZZ_KIND_SG 2u
#define SCUZZ_KIND_COMPLETE 3u
#define SCUZZ_KIND_BUNDLE 4u

/* Paths (slot byte 9). */
#define SCUZZ_PATH_SINGLE 0u
#define SCUZZ_PATH_BUNDLED 1u

/*
 * Submit record, from slot offset 32:
 *   32 u64 target_id          40 u8[8] lun (fLogicalUnitBytes)
 *   48 u64 tag                56 u64 requested_transfer_count
 *   64 u64 buffer_iovm_addr   72 u32 timeout_ms
 *   76 u8  cdb_len  77 u8 direction (0 none, 1 to device, 2 from device)
 *   78 u8  task_attribute (0 simple, 1 ordered, 2 head of queue, 3 ACA)
 *   79 u8  reserved           80 u8[16] cdb
 *
 * SG record (the list the DEXT built for the controller), from offset 32:
 *   32 u32 total segments in the list   36 u32 index of the first one here
 *   40 u32 segments in this record      44 u32 reserved
 *   48 13 x { u64 address, u32 length, u32 reserved }
 * A list longer than 13 segments takes several consecutive records.
 *
 * Complete record, from offset 32:
 *   32 u64 bytes_transferred
 *   40 u8  completion_status (fCompletionStatus)
 *   41 u8  service_response (fServiceResponse)
 *   42 u8  sense_len as reported  43 u8 sense bytes stored (<= 208)
 *   44 u32 reserved               48 u8[208] sense
 *
 * Bundle record (one per UserProcessBundledParallelTasks or
 * BundledParallelTaskCompletion call), from offset 32:
 *   32 u8 phase (1 submit, 2 complete)  33 u8 reserved  34 u16 count
 *   36 u16[count] slot indices (at most 32; more are not recorded)
 */
#define SCUZZ_SG_PER_RECORD 13u
#define SCUZZ_SENSE_STORED_MAX 208u
#define SCUZZ_BUNDLE_MAX 32u

/* One entry of a controller scatter-gather list, as the DEXT built it. */
typedef struct scuzz_sg_entry {
    uint64_t address; /* controller-visible (IOVM or bus) address */
    uint32_t length;  /* bytes */
} scuzz_sg_entry;

/*
 * Formats `len` bytes at `mem` (8-byte aligned) as an empty ring. Returns
 * the number of slots, or 0 if `len` holds fewer than one slot or `mem` is
 * misaligned. Call once, before any capture call, from one thread.
 */
uint32_t scuzz_capture_init(void *mem, size_t len, uint64_t time_ns);

/*
 * Records a task as UserProcessParallelTask receives it. Call first thing
 * in UserProcessParallelTask_Impl, passing the task's fields: cdb points at
 * fCommandDescriptorBlock, cdb_len is fCommandSize (values above 16 are
 * clipped to 16), lun points at the 8 fLogicalUnitBytes.
 */
void scuzz_capture_submit(void *ring, uint64_t time_ns, uint64_t task_id,
                          uint64_t target_id, const uint8_t lun[8],
                          uint64_t tag, uint8_t task_attribute,
                          const uint8_t *cdb, uint8_t cdb_len,
                          uint8_t direction,
                          uint64_t requested_transfer_count,
                          uint64_t buffer_iovm_addr, uint32_t timeout_ms);

/*
 * The same for one task of a bundle: call once per index of the
 * parallelRequestSlotIndices that UserProcessBundledParallelTasks gives,
 * with the fields of the task at that slot of the mapped command buffer.
 */
void scuzz_capture_submit_bundled(void *ring, uint64_t time_ns,
                                  uint16_t slot_index, uint64_t task_id,
                                  uint64_t target_id, const uint8_t lun[8],
                                  uint64_t tag, uint8_t task_attribute,
                                  const uint8_t *cdb, uint8_t cdb_len,
                                  uint8_t direction,
                                  uint64_t requested_transfer_count,
                                  uint64_t buffer_iovm_addr,
                                  uint32_t timeout_ms);

/*
 * Records the scatter-gather list the DEXT built for the controller for
 * task `task_id` (the task itself carries only fBufferIOVMAddr and a
 * length). Call after building the list, before ringing the doorbell.
 */
void scuzz_capture_sg(void *ring, uint64_t time_ns, uint64_t task_id,
                      const scuzz_sg_entry *segments, uint32_t count);

/*
 * Records a completion as the DEXT reports it through ParallelTaskCompletion:
 * pass the fields it puts in SCSIUserParallelResponse. sense may be NULL
 * when sense_len is 0.
 */
void scuzz_capture_complete(void *ring, uint64_t time_ns, uint64_t task_id,
                            uint8_t completion_status,
                            uint8_t service_response,
                            uint64_t bytes_transferred, const uint8_t *sense,
                            uint8_t sense_len);

/* The same for a bundled task, before BundledParallelTaskCompletion. */
void scuzz_capture_complete_bundled(void *ring, uint64_t time_ns,
                                    uint16_t slot_index, uint64_t task_id,
                                    uint8_t completion_status,
                                    uint8_t service_response,
                                    uint64_t bytes_transferred,
                                    const uint8_t *sense, uint8_t sense_len);

/*
 * Marks one UserProcessBundledParallelTasks call (phase 1) or one
 * BundledParallelTaskCompletion call (phase 2) with its slot indices, so the
 * importer can show how commands were batched.
 */
void scuzz_capture_bundle(void *ring, uint64_t time_ns, uint8_t phase,
                          const uint16_t *slot_indices, uint16_t count);

#ifdef __cplusplus
}
#endif

#endif /* SCUZZ_CAPTURE_H */
