// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* pidmap's BPF side: the pid+address trie, the sync-request protocol, the
 * exec/fork programs that ask user space for syncs, and the CPU sampler that
 * resolves every user frame through the trie at sample time. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "pidmap.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define PF_KTHREAD 0x00200000
#define MAX_ANCESTORS 8
#define FIRST_REQUEST_GAP_NS 1000000ULL
/* the fields of an unwind row (pidmap.h) */
#define UNWIND_ROW_KIND(r) ((r) & 0xf)
#define UNWIND_ROW_RBP_SAVED(r) (((r) >> 4) & 1)
#define UNWIND_ROW_CFA(r) (((r) >> 5) & 0x7ffff)
#define UNWIND_ROW_RBP_OFFSET(r) ((__s64)(__s8)((r) >> 24) * 8)

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, PIDMAP_TRIE_MAX_ENTRIES);
	__type(key, struct pid_page_key);
	__type(value, struct mapping_info);
} pid_page_to_mapping_info SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PIDMAP_EVENTS_MAX_ENTRIES);
	__type(key, __u64);
	__type(value, __u8);
} pid_events SEC(".maps");

/* The answer of pidmap_vmas, mapped into the agent. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, PIDMAP_VMAS_MAX);
	__type(key, __u32);
	__type(value, struct vma_entry);
} vma_out SEC(".maps");

/* Wakes user space after a request; see request_sync. */
struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} report_events SEC(".maps");

/* Set when a request waits in pid_events without a record that announces
 * it (the record could not be written); user space reads it after each
 * batch of records (mapped into its memory: no system call) and, when
 * set, clears it and drains pid_events. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} report_latch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pidmap_config);
} pidmap_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} sample_events SEC(".maps");

/* Per-process rate limit of the sampler's sync requests. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, struct request_state);
} sample_requests SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SAMPLER_STAT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} sampler_stats SEC(".maps");

/* The unwind tables (pidmap.h says the layout): plain hashes, allocated
 * as used, so loading or freeing a table costs no RCU grace period (a
 * map of maps would, per update). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, UNWIND_FILES_MAX_ENTRIES);
	__type(key, __u64);
	__type(value, struct unwind_file);
} unwind_files SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, UNWIND_PAGES_MAX_ENTRIES);
	__type(key, struct unwind_page_key);
	__type(value, struct unwind_page);
} unwind_pages SEC(".maps");

struct sample_scratch {
	struct sample_header header;
	struct sample_frame frames[PIDMAP_MAX_USER_FRAMES];
	__u64 kernel[PIDMAP_MAX_KERNEL_FRAMES];
	__u64 ustack[PIDMAP_MAX_USER_FRAMES];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sample_scratch);
} sample_scratch SEC(".maps");

static __always_inline void stat_add(__u32 idx, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&sampler_stats, &idx);
	if (v)
		*v += n;
}

static __always_inline struct pidmap_config *get_config(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&pidmap_config, &zero);
}

static __always_inline bool is_known(__u32 tgid)
{
	struct pid_page_key key = {
		.prefix_len = PIDMAP_FULL_PREFIX,
		.pid = bpf_htonl(tgid),
		.page = 0,
	};
	struct mapping_info *info = bpf_map_lookup_elem(&pid_page_to_mapping_info, &key);
	return info && info->file_id == 0;
}

/* The request protocol: the request is a record on report_events, which
 * user space serves without touching pid_events. Only a request no record
 * can carry (the ring is full) is written to pid_events as pid<<32|tid
 * (the otel layout: a key already there is a request already pending) and
 * raises the latch, so the next batch of records drains pid_events. */
static __always_inline void request_sync(void *ctx, struct task_struct *task, __u32 tgid, __u32 tid)
{
	struct report_event ev = { .pid = tgid, .tid = tid };
	struct task_struct *leader = BPF_CORE_READ(task, group_leader);
	if (leader) {
		ev.start_ns = BPF_CORE_READ(leader, start_boottime);
		if (bpf_core_field_exists(((struct pid *)0)->ino))
			ev.pid_ino = BPF_CORE_READ(leader, thread_pid, ino);
		ev.uid = BPF_CORE_READ(leader, real_cred, uid.val);
	}
	if (!bpf_perf_event_output(ctx, &report_events, BPF_F_CURRENT_CPU, &ev, sizeof(ev)))
		return;

	__u64 key = ((__u64)tgid << 32) | tid;
	__u8 one = 1;
	__u32 zero = 0;
	bpf_map_update_elem(&pid_events, &key, &one, BPF_NOEXIST);
	__u32 *latch = bpf_map_lookup_elem(&report_latch, &zero);
	if (latch)
		*latch = 1;
}

static __always_inline bool ancestor_known(struct task_struct *task)
{
	for (int i = 0; i < MAX_ANCESTORS; i++) {
		struct task_struct *parent = BPF_CORE_READ(task, real_parent);
		if (!parent || parent == task)
			return false;
		__u32 ptgid = BPF_CORE_READ(parent, tgid);
		if (ptgid <= 1)
			return false;
		if (is_known(ptgid))
			return true;
		task = parent;
	}
	return false;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(pidmap_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct pidmap_config *cfg = get_config();
	__u32 tgid = p->tgid;

	if (!cfg)
		return 0;
	if (cfg->track_all || is_known(tgid) ||
	    (cfg->track_children && ancestor_known(p)))
		request_sync(ctx, p, tgid, p->pid);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(pidmap_fork, struct task_struct *parent, struct task_struct *child)
{
	struct pidmap_config *cfg = get_config();

	if (!cfg || child->pid != child->tgid)
		return 0; /* a new thread shares its process's mappings */
	/* A child sharing its parent's address space (vfork, posix_spawn)
	 * has no mappings of its own until it execs, and its exec asks for
	 * the sync: a request now would sync the parent's maps for nothing. */
	if (child->mm == parent->mm)
		return 0;
	if (cfg->track_all || (cfg->track_children && is_known(parent->tgid)))
		request_sync(ctx, child, child->tgid, child->pid);
	return 0;
}

/* Rate-limited request from the sampler: the first request of a process
 * goes out at once, later ones back off from 1 ms to request_interval_ns. */
static __always_inline __u32 sampler_request(void *ctx, struct task_struct *task, __u32 tgid,
					     __u32 tid, __u64 interval)
{
	__u64 now = bpf_ktime_get_ns();
	struct request_state *st = bpf_map_lookup_elem(&sample_requests, &tgid);

	if (st) {
		if (now - st->last_ns < st->gap_ns) {
			stat_add(SAMPLER_STAT_REQUESTS_SUPPRESSED, 1);
			return 0;
		}
		st->last_ns = now;
		st->gap_ns = st->gap_ns * 2 > interval ? interval : st->gap_ns * 2;
		st->count++;
	} else {
		struct request_state fresh = { .last_ns = now, .gap_ns = FIRST_REQUEST_GAP_NS, .count = 1 };
		bpf_map_update_elem(&sample_requests, &tgid, &fresh, BPF_ANY);
	}
	stat_add(SAMPLER_STAT_REQUESTS, 1);
	request_sync(ctx, task, tgid, tid);
	return SAMPLE_REQUESTED;
}

struct resolve_ctx {
	__u32 tgid;
	__u32 unresolved;
};

static long resolve_frame(__u64 i, void *data)
{
	struct resolve_ctx *rc = data;
	__u32 zero = 0;
	struct sample_scratch *s = bpf_map_lookup_elem(&sample_scratch, &zero);

	if (!s || i >= PIDMAP_MAX_USER_FRAMES)
		return 1;
	__u64 ip = s->ustack[i];
	struct pid_page_key key = {
		.prefix_len = PIDMAP_FULL_PREFIX,
		.pid = bpf_htonl(rc->tgid),
		.page = bpf_cpu_to_be64(ip),
	};
	struct mapping_info *info = bpf_map_lookup_elem(&pid_page_to_mapping_info, &key);
	if (info && info->file_id) {
		__u64 bias = info->bias_and_prog & PIDMAP_BIAS_MASK;
		s->frames[i].file_id = info->file_id;
		s->frames[i].offset = ip - bias;
	} else {
		s->frames[i].file_id = 0;
		s->frames[i].offset = ip;
		rc->unresolved++;
	}
	return 0;
}

/* The CFI walk of one user stack (pidmap_config.unwind AUTO or CFI): per
 * frame, the trie gives the file and offset of the ip, the file's unwind
 * table the row for that offset (offset - 1 for a return address: it
 * points after the call), the row the CFA and where the caller's RBP is,
 * and the return address, read at CFA - 8, is the next ip. */
struct walk_state {
	__u64 ip, sp, bp;
	__u32 tgid;
	__u32 mode;
	__u32 n;     /* frames written */
	__u32 end;   /* WALK_*, once the walk ended */
	__u32 exact; /* ip is exact (the first frame, after a signal frame) */
	__u32 unresolved;
	__u32 cfi_frames;
	__u32 fp_steps;
};

struct part_search {
	struct unwind_page *v;
	__u32 low;
	__u32 lo, hi;
};

/* One step of the binary search of a part for the last pc <= low. */
static long search_step(__u64 i, void *data)
{
	struct part_search *ps = data;
	struct unwind_page *v = ps->v;

	if (!v || ps->lo >= ps->hi)
		return 1;
	__u32 mid = (ps->lo + ps->hi) / 2;
	if (v->pc[mid & (UNWIND_PAGE_ROWS - 1)] <= ps->low)
		ps->lo = mid + 1;
	else
		ps->hi = mid;
	return 0;
}

/* The row for file offset q of a file whose table spans pages
 * [f->first_page, f->last_page]: the part of q's page that holds q, then
 * the entry with the greatest pc <= q in it (a bounded binary search). */
static __always_inline bool find_row(__u64 file_id, struct unwind_file *f, __u64 q, __u32 *row)
{
	__u64 page = q >> UNWIND_PAGE_SHIFT;
	__u32 low = q & ((1 << UNWIND_PAGE_SHIFT) - 1);

	if (page < f->first_page || page > f->last_page)
		return false;
	struct unwind_page_key key = { .file_id = file_id, .page = page, .part = 0 };
	struct unwind_page *v = NULL;
	bool found = false;
	for (int p = 0; p < UNWIND_MAX_PARTS; p++) {
		key.part = p;
		v = bpf_map_lookup_elem(&unwind_pages, &key);
		if (!v)
			return false;
		if (low < v->next) {
			found = true;
			break;
		}
	}
	if (!found || !v)
		return false;
	struct part_search ps = { .v = v, .low = low, .lo = 0, .hi = v->count };
	if (ps.hi > UNWIND_PAGE_ROWS)
		ps.hi = UNWIND_PAGE_ROWS;
	/* a callback, verified once: an inline search multiplies the
	 * verifier's states by every branch of the walk */
	bpf_loop(UNWIND_SEARCH_STEPS, search_step, &ps, 0);
	__u32 lo = ps.lo;
	*row = lo == 0 ? v->prev_row : v->row[(lo - 1) & (UNWIND_PAGE_ROWS - 1)];
	return true;
}

/* One frame-pointer step, for a frame whose file has no table (JIT code,
 * a file whose table is not loaded yet); `why` ends the walk when the
 * frame pointer chain does. */
static __always_inline long fp_step(struct walk_state *w, __u32 why)
{
	__u64 frame[2];

	w->fp_steps++;
	if (w->bp == 0 || (w->bp & 7)) {
		w->end = why;
		return 1;
	}
	if (bpf_probe_read_user(frame, sizeof(frame), (void *)w->bp)) {
		w->end = WALK_READ_FAULT;
		return 1;
	}
	if (frame[1] == 0) {
		w->end = why;
		return 1;
	}
	w->sp = w->bp + 16;
	w->bp = frame[0];
	w->ip = frame[1];
	w->exact = 0;
	return 0;
}

static long walk_step(__u64 i, void *data)
{
	struct walk_state *w = data;
	__u32 zero = 0;
	struct sample_scratch *s = bpf_map_lookup_elem(&sample_scratch, &zero);

	if (!s || i >= PIDMAP_MAX_USER_FRAMES) {
		w->end = WALK_FRAME_LIMIT;
		return 1;
	}
	__u64 ip = w->ip;
	struct pid_page_key key = {
		.prefix_len = PIDMAP_FULL_PREFIX,
		.pid = bpf_htonl(w->tgid),
		.page = bpf_cpu_to_be64(ip),
	};
	struct mapping_info *info = bpf_map_lookup_elem(&pid_page_to_mapping_info, &key);
	w->n = i + 1;
	if (!info || !info->file_id) {
		s->frames[i].file_id = 0;
		s->frames[i].offset = ip;
		w->unresolved++;
		if (w->mode == PIDMAP_UNWIND_CFI) {
			w->end = WALK_NO_MAPPING;
			return 1;
		}
		return fp_step(w, WALK_NO_MAPPING);
	}
	__u64 file_id = info->file_id;
	__u64 off = ip - (info->bias_and_prog & PIDMAP_BIAS_MASK);
	s->frames[i].file_id = file_id;
	s->frames[i].offset = off;
	struct unwind_file *table = bpf_map_lookup_elem(&unwind_files, &file_id);
	if (!table) {
		if (w->mode == PIDMAP_UNWIND_CFI) {
			w->end = WALK_NO_TABLE;
			return 1;
		}
		return fp_step(w, WALK_NO_TABLE);
	}
	__u32 row;
	if (!find_row(file_id, table, w->exact ? off : off - 1, &row)) {
		w->end = WALK_NO_ROW;
		return 1;
	}
	w->cfi_frames++;
	__u64 cfa;
	switch (UNWIND_ROW_KIND(row)) {
	case UNWIND_RSP:
		cfa = w->sp + UNWIND_ROW_CFA(row);
		break;
	case UNWIND_RBP:
		cfa = w->bp + UNWIND_ROW_CFA(row);
		break;
	case UNWIND_PLT:
		cfa = w->sp + UNWIND_ROW_CFA(row) + ((ip & 15) >= UNWIND_PLT_THRESHOLD ? 8 : 0);
		break;
	case UNWIND_SIGNAL: {
		/* the interrupted frame's registers, from the ucontext */
		__u64 sp, bp, nip;
		if (bpf_probe_read_user(&sp, 8, (void *)(w->sp + UNWIND_SIGNAL_RSP)) ||
		    bpf_probe_read_user(&bp, 8, (void *)(w->sp + UNWIND_SIGNAL_RBP)) ||
		    bpf_probe_read_user(&nip, 8, (void *)(w->sp + UNWIND_SIGNAL_RIP))) {
			w->end = WALK_READ_FAULT;
			return 1;
		}
		w->sp = sp;
		w->bp = bp;
		w->ip = nip;
		w->exact = 1;
		return 0;
	}
	case UNWIND_END:
		w->end = WALK_END_MARKER;
		return 1;
	case UNWIND_STOP:
		w->end = WALK_STOP_ROW;
		return 1;
	default:
		w->end = WALK_NO_ROW;
		return 1;
	}
	__u64 ra;
	if (bpf_probe_read_user(&ra, 8, (void *)(cfa - 8))) {
		w->end = WALK_READ_FAULT;
		return 1;
	}
	if (UNWIND_ROW_RBP_SAVED(row)) {
		__u64 bp;
		if (bpf_probe_read_user(&bp, 8, (void *)(cfa + UNWIND_ROW_RBP_OFFSET(row)))) {
			w->end = WALK_READ_FAULT;
			return 1;
		}
		w->bp = bp;
	}
	if (ra == 0) {
		w->end = WALK_END_MARKER;
		return 1;
	}
	w->ip = ra;
	w->sp = cfa;
	w->exact = 0;
	return 0;
}

/* Walks the user stack of the sampled task by CFI into s->frames; returns
 * the number of frames, sets *walk to how the walk ended. */
static __always_inline __u32 walk_user(struct bpf_perf_event_data *ctx, __u32 tgid, __u32 mode,
				       __u32 *walk, __u32 *unresolved)
{
	struct walk_state w = { .tgid = tgid, .mode = mode, .exact = 1 };

	/* cs is read as the 8 bytes of its slot: the context allows no less */
	__u64 cs = *(volatile __u64 *)((char *)&ctx->regs + __builtin_offsetof(struct pt_regs, cs));
	if ((cs & 3) == 3) {
		w.ip = ctx->regs.ip;
		w.sp = ctx->regs.sp;
		w.bp = ctx->regs.bp;
	} else {
		/* in the kernel: the user registers saved at its entry */
		struct pt_regs *ur = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
		if (ur) {
			w.ip = BPF_CORE_READ(ur, ip);
			w.sp = BPF_CORE_READ(ur, sp);
			w.bp = BPF_CORE_READ(ur, bp);
		}
	}
	stat_add(SAMPLER_STAT_WALKS, 1);
	if (w.ip == 0 || w.sp == 0) {
		*walk = WALK_NO_REGS;
		stat_add(SAMPLER_STAT_WALK_NO_REGS, 1);
		return 0;
	}
	bpf_loop(PIDMAP_MAX_USER_FRAMES, walk_step, &w, 0);
	if (w.end == WALK_NONE)
		w.end = WALK_FRAME_LIMIT;
	*walk = w.end;
	*unresolved = w.unresolved;
	stat_add(SAMPLER_STAT_CFI_FRAMES, w.cfi_frames);
	stat_add(SAMPLER_STAT_FP_STEPS, w.fp_steps);
	if (w.end <= WALK_NO_REGS)
		stat_add(SAMPLER_STAT_WALK_END_MARKER + w.end - WALK_END_MARKER, 1);
	return w.n > PIDMAP_MAX_USER_FRAMES ? PIDMAP_MAX_USER_FRAMES : w.n;
}

SEC("perf_event")
int pidmap_sample(struct bpf_perf_event_data *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32, tid = (__u32)id, zero = 0;
	struct pidmap_config *cfg = get_config();
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();

	if (!cfg || tgid == 0)
		return 0;
	bool known = is_known(tgid);
	if (!cfg->track_all && !known && !ancestor_known(task)) {
		stat_add(SAMPLER_STAT_OUT_OF_SCOPE, 1);
		return 0;
	}
	stat_add(SAMPLER_STAT_SAMPLES, 1);

	struct sample_scratch *s = bpf_map_lookup_elem(&sample_scratch, &zero);
	if (!s)
		return 0;
	__builtin_memset(&s->header, 0, sizeof(s->header));
	s->header.pid = tgid;
	s->header.tid = tid;
	s->header.cpu = bpf_get_smp_processor_id();
	s->header.time_ns = bpf_ktime_get_ns();
	bpf_get_current_comm(s->header.comm, sizeof(s->header.comm));

	__u32 flags = 0;
	if (BPF_CORE_READ(task, flags) & PF_KTHREAD) {
		flags |= SAMPLE_KTHREAD;
		stat_add(SAMPLER_STAT_KTHREAD, 1);
	}
	if (!known)
		flags |= SAMPLE_UNKNOWN_PROCESS;

	__u32 nuser = 0, walk = WALK_NONE;
	struct resolve_ctx rc = { .tgid = tgid, .unresolved = 0 };
	__u64 walk_start = bpf_ktime_get_ns();
	if (!(flags & SAMPLE_KTHREAD) && cfg->unwind != PIDMAP_UNWIND_FP) {
		nuser = walk_user(ctx, tgid, cfg->unwind, &walk, &rc.unresolved);
	} else if (!(flags & SAMPLE_KTHREAD)) {
		long n = bpf_get_stack(ctx, s->ustack, sizeof(s->ustack), BPF_F_USER_STACK);
		if (n < 0) {
			flags |= SAMPLE_USER_STACK_ERROR;
			stat_add(SAMPLER_STAT_STACK_ERRORS, 1);
		} else {
			nuser = n / sizeof(__u64);
			/* frame pointer walks end at a null return address */
			for (__u32 i = 0; i < PIDMAP_MAX_USER_FRAMES; i++) {
				if (i >= nuser)
					break;
				if (s->ustack[i] == 0) {
					nuser = i;
					break;
				}
			}
		}
	}
	barrier_var(nuser); /* the clamp below on a register, not a spilled copy (6.1) */
	if (nuser > PIDMAP_MAX_USER_FRAMES)
		nuser = PIDMAP_MAX_USER_FRAMES;
	if (nuser && walk == WALK_NONE)
		bpf_loop(nuser, resolve_frame, &rc, 0);
	if (!(flags & SAMPLE_KTHREAD)) {
		stat_add(SAMPLER_STAT_USER_WALK_NS, bpf_ktime_get_ns() - walk_start);
		stat_add(SAMPLER_STAT_USER_WALKS, 1);
	}
	stat_add(SAMPLER_STAT_FRAMES, nuser);
	stat_add(SAMPLER_STAT_UNRESOLVED_FRAMES, rc.unresolved);
	if (!known)
		stat_add(SAMPLER_STAT_UNKNOWN_PROCESS, 1);
	if ((!known || rc.unresolved) && !(flags & SAMPLE_KTHREAD))
		flags |= sampler_request(ctx, task, tgid, tid, cfg->request_interval_ns);

	__u32 nkernel = 0;
	if (cfg->kernel_stacks) {
		/* kernel addresses follow the user frames directly */
		__u32 off = nuser * sizeof(struct sample_frame);
		if (off > sizeof(s->frames))
			off = sizeof(s->frames);
		long n = bpf_get_stack(ctx, (void *)s->frames + off, sizeof(s->kernel), 0);
		if (n < 0) {
			flags |= SAMPLE_KERNEL_STACK_ERROR;
			stat_add(SAMPLER_STAT_STACK_ERRORS, 1);
		} else {
			nkernel = n / sizeof(__u64);
		}
	}
	if (nkernel > PIDMAP_MAX_KERNEL_FRAMES)
		nkernel = PIDMAP_MAX_KERNEL_FRAMES;
	s->header.user_frames = nuser;
	s->header.kernel_frames = nkernel;
	s->header.flags = flags;
	s->header.walk = walk;

	__u64 size = sizeof(s->header) + nuser * sizeof(struct sample_frame) +
		     nkernel * sizeof(__u64);
	if (size > sizeof(struct sample_header) + sizeof(s->frames) + sizeof(s->kernel))
		return 0;
	if (bpf_perf_event_output(ctx, &sample_events, BPF_F_CURRENT_CPU, s, size))
		stat_add(SAMPLER_STAT_OUTPUT_ERRORS, 1);
	return 0;
}

extern struct task_struct *bpf_task_from_pid(s32 pid) __ksym __weak;
extern void bpf_task_release(struct task_struct *p) __ksym __weak;
extern int bpf_iter_task_vma_new(struct bpf_iter_task_vma *it, struct task_struct *task,
				 __u64 addr) __ksym __weak;
extern struct vm_area_struct *bpf_iter_task_vma_next(struct bpf_iter_task_vma *it) __ksym __weak;
extern void bpf_iter_task_vma_destroy(struct bpf_iter_task_vma *it) __ksym __weak;

#define PIDMAP_VM_EXEC 0x4
#define PIDMAP_ESRCH 3
#define PIDMAP_E2BIG 7
#define PIDMAP_EOPNOTSUPP 95
#define PIDMAP_ETIME 62

/* The executable mappings of q->pid, as /proc/PID/maps would list them
 * (file mappings with their device, inode and page offset, deleted or
 * not, and the vdso), without /proc: run by the agent's loop with
 * BPF_PROG_RUN. The iterator takes the mmap lock with a trylock (per-VMA
 * locks on later kernels), so a process holding its lock costs EBUSY, not
 * a wait; the agent then reads /proc on its maps worker instead. */
SEC("syscall")
int pidmap_vmas(struct vma_query *q)
{
	struct bpf_iter_task_vma it;
	struct vm_area_struct *vma;

	/* the counters live in the context, not in registers: loaded back
	 * each turn they are unknown to the verifier, whose walk of the loop
	 * then converges at once instead of once per value */
	q->count = 0;
	q->visited = 0;
	q->err = 0;
	if (!bpf_ksym_exists(bpf_task_from_pid) || !bpf_ksym_exists(bpf_iter_task_vma_new)) {
		q->err = -PIDMAP_EOPNOTSUPP;
		return 0;
	}
	struct task_struct *task = bpf_task_from_pid(q->pid);
	if (!task) {
		q->err = -PIDMAP_ESRCH;
		return 0;
	}
	__u64 t0 = bpf_ktime_get_ns();
	q->err = bpf_iter_task_vma_new(&it, task, 0);
	while (!q->err && (vma = bpf_iter_task_vma_next(&it))) {
		__u32 seen = q->visited + 1;
		q->visited = seen;
		if (seen > PIDMAP_VMAS_VISIT_MAX) {
			q->err = -PIDMAP_E2BIG;
			break;
		}
		if (bpf_ktime_get_ns() - t0 > PIDMAP_VMAS_NS_MAX) {
			q->err = -PIDMAP_ETIME;
			break;
		}
		if (!(vma->vm_flags & PIDMAP_VM_EXEC))
			continue;
		struct file *file = vma->vm_file;
		__u32 flags = 0;
		__u64 ino = 0;
		__u32 dev = 0;
		if (file) {
			struct inode *inode = file->f_inode;
			struct dentry *d = file->f_path.dentry;
			if (!inode || !d)
				continue;
			ino = inode->i_ino;
			dev = inode->i_sb->s_dev;
			flags = PIDMAP_VMA_FILE;
			/* d_unlinked: what /proc prints as " (deleted)" */
			if (!d->d_hash.pprev && d->d_parent != d)
				flags |= PIDMAP_VMA_DELETED;
		} else if (vma->vm_mm && vma->vm_mm->context.vdso == (void *)vma->vm_start) {
			flags = PIDMAP_VMA_VDSO;
		} else {
			continue; /* anonymous: JIT code, [uprobes] */
		}
		__u32 idx = q->count;
		struct vma_entry *e = bpf_map_lookup_elem(&vma_out, &idx);
		if (!e) {
			q->err = -PIDMAP_E2BIG;
			break;
		}
		e->start = vma->vm_start;
		e->end = vma->vm_end;
		e->pgoff = vma->vm_pgoff;
		e->ino = ino;
		e->dev = dev;
		e->flags = flags;
		q->count = idx + 1;
	}
	bpf_iter_task_vma_destroy(&it);
	bpf_task_release(task);
	return 0;
}
