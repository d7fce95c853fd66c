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
};

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
	__u32 pad;
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
#define SAMPLER_STAT_COUNT 10

#endif
