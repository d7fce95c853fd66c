/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Structures shared between the BPF programs and user space. Every one is
 * mirrored by a #[repr(C)] type in src/abi.rs whose size and offsets are
 * unit-tested. */
#ifndef PIDMAP_H
#define PIDMAP_H

#define PIDMAP_TRIE_MAX_ENTRIES (1 << 20)
#define PIDMAP_EVENTS_MAX_ENTRIES 65536
/* prefix_len of a full pid + address lookup */
#define PIDMAP_FULL_PREFIX 96
#define PIDMAP_MAX_USER_FRAMES 127
#define PIDMAP_MAX_KERNEL_FRAMES 127

/* Key of pid_page_to_mapping_info: pid and page are big-endian so that the
 * LPM trie compares them most significant bit first. */
struct pid_page_key {
	__u32 prefix_len;
	__u32 pid;  /* big-endian */
	__u64 page; /* big-endian */
};

/* Value of pid_page_to_mapping_info. For the marker (page 0, prefix 96):
 * file_id 0 and bias = process start time in clock ticks. */
struct mapping_info {
	__u64 file_id;
	__u64 bias_and_prog; /* low 56 bits: bias; top byte: program */
};

/* The bias field of mapping_info.bias_and_prog (the top byte is the program). */
#define PIDMAP_BIAS_MASK ((1ULL << 56) - 1)

/* Runtime configuration written by user space into pidmap_config[0]. */
struct pidmap_config {
	__u32 track_all;      /* request a sync of every new process */
	__u32 track_children; /* request a sync of children of known processes */
	__u32 kernel_stacks;  /* sampler: also record the kernel stack */
	__u32 wake_every_request; /* no effect: every request sends its record */
	__u64 request_interval_ns; /* sampler: min gap between requests per pid */
	__u32 unwind; /* sampler: PIDMAP_UNWIND_FP, _AUTO or _CFI */
	__u32 pad;
};

/* pidmap_config.unwind: how the sampler walks user stacks. FP: the
 * kernel's frame-pointer walk (bpf_get_stack). AUTO: the CFI walk, with a
 * frame-pointer step for a frame whose file has no table. CFI: the CFI
 * walk only (a frame without a table ends the walk). */
#define PIDMAP_UNWIND_FP 0
#define PIDMAP_UNWIND_AUTO 1
#define PIDMAP_UNWIND_CFI 2

/* Unwind tables. A file's table is cut into pages of 4 KiB of file
 * offsets; unwind_pages holds, per (file_id, page, part), up to
 * UNWIND_PAGE_ROWS entries of that page (a page with more has more parts,
 * UNWIND_MAX_PARTS at most). unwind_files holds, per file_id with a table,
 * its first and last page. An entry is a page-relative pc and a row; a row
 * (32 bits): kind in bits 0-3, bit 4 set when the caller's RBP is saved at
 * CFA + rbp_offset, the CFA offset (0..2^19-1, bytes) in bits 5-23, and
 * rbp_offset / 8 (signed) in bits 24-31. */
#define UNWIND_PAGE_SHIFT 12
#define UNWIND_PAGE_ROWS 128
#define UNWIND_MAX_PARTS 16
#define UNWIND_NO_NEXT 0xffff
#define UNWIND_FILES_MAX_ENTRIES 16384
#define UNWIND_PAGES_MAX_ENTRIES 65536

struct unwind_page_key {
	__u64 file_id;
	__u32 page; /* file offset >> UNWIND_PAGE_SHIFT */
	__u32 part;
};

struct unwind_page {
	__u32 prev_row; /* the row in effect before pc[0] */
	__u16 count;    /* entries in this part */
	__u16 next;     /* the page-relative pc where the next part starts, or UNWIND_NO_NEXT */
	__u16 pc[UNWIND_PAGE_ROWS]; /* page-relative, increasing */
	__u32 row[UNWIND_PAGE_ROWS];
};

struct unwind_file {
	__u32 first_page;
	__u32 last_page;
};

#define UNWIND_GAP 0
#define UNWIND_RSP 1
#define UNWIND_RBP 2
#define UNWIND_PLT 3
#define UNWIND_SIGNAL 4
#define UNWIND_END 5
#define UNWIND_STOP 6
/* Signal frames: offsets from RSP of the caller's RSP, RBP and RIP in the
 * ucontext the kernel pushed (uc_mcontext at 40, gregs in REG_* order). */
#define UNWIND_SIGNAL_RSP (40 + 15 * 8)
#define UNWIND_SIGNAL_RBP (40 + 10 * 8)
#define UNWIND_SIGNAL_RIP (40 + 16 * 8)
#define UNWIND_PLT_THRESHOLD 11
/* Binary search steps within one part: log2(UNWIND_PAGE_ROWS) + 1. */
#define UNWIND_SEARCH_STEPS 8

/* sample_header.walk: how the CFI walk of the sample's user stack ended
 * (0 when it did not run). */
#define WALK_NONE 0
#define WALK_END_MARKER 1 /* the outermost frame: the stack is whole */
#define WALK_NO_MAPPING 2 /* an address no tracked mapping holds */
#define WALK_NO_TABLE 3 /* a file without a table (--unwind cfi) */
#define WALK_NO_ROW 4 /* the table has no row there */
#define WALK_STOP_ROW 5 /* a row the table cannot express */
#define WALK_READ_FAULT 6 /* the stack could not be read */
#define WALK_FRAME_LIMIT 7 /* PIDMAP_MAX_USER_FRAMES reached */
#define WALK_NO_REGS 8 /* no user registers (a kernel thread, or none saved) */

/* A sync request sent over report_events, one record per request newly
 * written to pid_events (key pid << 32 | tid). User space serves the pid
 * and deletes that key; pid_events itself is read only when the latch is
 * set, records were lost, or on the periodic request sweep. */
/* start_ns and pid_ino describe the process (its leader) at the request:
 * its start_boottime (field 22 of /proc/PID/stat is this in clock ticks) and
 * the inode of its struct pid in pidfs (Linux 6.9; 0 before), which fstat of
 * a pidfd shows: together they spare the sync a read of /proc/PID/stat. */
struct report_event {
	__u32 pid;
	__u32 tid;
	__u64 start_ns; /* ns since boot */
	__u64 pid_ino;
	__u32 uid; /* the real uid of its leader */
	__u32 pad;
};

/* Value of sample_requests: the sampler's per-process request rate limit. */
struct request_state {
	__u64 last_ns;
	__u64 gap_ns;
	__u64 count; /* requests sent for this process */
};

#define SAMPLE_UNKNOWN_PROCESS (1u << 0)
#define SAMPLE_USER_STACK_ERROR (1u << 1)
#define SAMPLE_KERNEL_STACK_ERROR (1u << 2)
#define SAMPLE_REQUESTED (1u << 3)
#define SAMPLE_KTHREAD (1u << 4)

/* Header of a sample record on sample_events, followed by user_frames
 * struct sample_frame and then kernel_frames __u64 addresses. */
struct sample_header {
	__u32 pid;
	__u32 tid;
	__u32 cpu;
	__u16 user_frames;
	__u16 kernel_frames;
	__u32 flags;
	__u32 walk; /* WALK_*: how the CFI walk ended */
	__u64 time_ns;
	char comm[16];
};

/* A user frame resolved at sample time: file_id 0 means unresolved, and
 * then offset holds the raw instruction pointer. */
struct sample_frame {
	__u64 file_id;
	__u64 offset;
};

/* Indices of sampler_stats (per-CPU counters); SAMPLER_STAT_NAMES in
 * src/abi.rs names them in this order. */
#define SAMPLER_STAT_SAMPLES 0
#define SAMPLER_STAT_OUT_OF_SCOPE 1
#define SAMPLER_STAT_UNKNOWN_PROCESS 2
#define SAMPLER_STAT_FRAMES 3
#define SAMPLER_STAT_UNRESOLVED_FRAMES 4
#define SAMPLER_STAT_REQUESTS 5
#define SAMPLER_STAT_REQUESTS_SUPPRESSED 6
#define SAMPLER_STAT_OUTPUT_ERRORS 7
#define SAMPLER_STAT_STACK_ERRORS 8
#define SAMPLER_STAT_KTHREAD 9
/* the CFI walk: walks, frames found through a table, frame-pointer steps,
 * and one counter per way a walk ends (WALK_* order) */
#define SAMPLER_STAT_WALKS 10
#define SAMPLER_STAT_CFI_FRAMES 11
#define SAMPLER_STAT_FP_STEPS 12
#define SAMPLER_STAT_WALK_END_MARKER 13
#define SAMPLER_STAT_WALK_NO_MAPPING 14
#define SAMPLER_STAT_WALK_NO_TABLE 15
#define SAMPLER_STAT_WALK_NO_ROW 16
#define SAMPLER_STAT_WALK_STOP_ROW 17
#define SAMPLER_STAT_WALK_READ_FAULT 18
#define SAMPLER_STAT_WALK_FRAME_LIMIT 19
#define SAMPLER_STAT_WALK_NO_REGS 20
/* ns spent walking and resolving user stacks (either walk), and the
 * samples that had one walked */
#define SAMPLER_STAT_USER_WALK_NS 21
#define SAMPLER_STAT_USER_WALKS 22
#define SAMPLER_STAT_COUNT 23

/* The loop's own read of a process's executable mappings: pidmap_vmas, a
 * syscall program run with BPF_PROG_RUN, takes a vma_query as its context
 * (read back after the run) and writes one vma_entry per executable
 * mapping into vma_out. It never waits for the process's mmap lock. */
#define PIDMAP_VMAS_MAX 64
#define PIDMAP_VMAS_VISIT_MAX 256
/* and for at most this long (ns): a process whose mappings change under
 * the walk makes each step retry */
#define PIDMAP_VMAS_NS_MAX 200000
#define PIDMAP_VMA_FILE 1
#define PIDMAP_VMA_DELETED 2
#define PIDMAP_VMA_VDSO 4

/* err: 0, or -errno: ESRCH no such process; ENOENT no address space (a
 * zombie leader, a kernel thread); EBUSY its mmap lock is held; E2BIG more
 * mappings than one run reads; ETIME the walk took too long; EOPNOTSUPP
 * the kernel lacks the kfuncs
 * (before Linux 6.7). count: entries written to vma_out; visited: the
 * mappings looked at. */
struct vma_query {
	__u32 pid;
	__s32 err;
	__u32 count;
	__u32 visited;
};

struct vma_entry {
	__u64 start;
	__u64 end;
	__u64 pgoff; /* in pages */
	__u64 ino;
	__u32 dev; /* the kernel's dev_t: major << 20 | minor */
	__u32 flags; /* PIDMAP_VMA_* */
};

#endif
