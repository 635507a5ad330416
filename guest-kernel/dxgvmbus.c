// SPDX-License-Identifier: GPL-2.0
/*
 * dxgkrnl for dxvmm: the virtio transport and the GPU-PV messages.
 *
 * A request is one descriptor chain of two buffers (docs/protocol.md §2.2):
 * a device-readable frame header + command and a device-writable frame
 * header + reply sized exactly for the command's reply. The chain's token
 * is the struct dxg_req, so a reply is matched by what virtqueue_get_buf()
 * returns; the request_id in the frame is checked against it.
 *
 * A dxg_req is reference counted: one reference for the waiter and one for
 * the ring while the device owns the buffers. A waiter that times out or is
 * killed drops only its own reference, so the buffers stay alive until the
 * device hands them back or the device is reset and they are detached.
 *
 * An asynchronous request (SUBMITCOMMAND and SUBMITCOMMANDTOHWQUEUE with
 * the async_msg bit, as WSL's dxgkrnl sends them) has no waiter: the
 * ring's reference is its only one. Its process's struct dxg_async counts
 * it until the device hands it back and keeps the first failure, which the
 * process's next call reports (dxgvm_async_settle). The device takes
 * requests in ring order, so whatever the process sends later is carried
 * out after it.
 *
 * Interrupts: used-buffer notifications are wanted only while someone
 * waits (a synchronous request, a settle, a full ring: dxg->cb_users).
 * With only asynchronous requests in flight the callback leaves them off
 * and the next send reaps what the device returned, as virtio-net does
 * with transmitted buffers: a stream of submissions costs the guest no
 * interrupt per submission.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/eventfd.h>
#include <linux/version.h>
#include <linux/jiffies.h>
#include <linux/refcount.h>
#include <linux/pfn.h>
#include <linux/scatterlist.h>
#include <linux/sizes.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/uaccess.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>

#include "dxgkrnl.h"

/* Per-process accounting of asynchronous requests. */
struct dxg_async {
	refcount_t		ref;		/* the process + one per request */
	/*
	 * Requests queued and answered: a settle waits for those queued
	 * before it (the device answers in ring order), not for ones other
	 * threads of the process send meanwhile.
	 */
	atomic64_t		queued;
	atomic64_t		answered;
	atomic_t		error;		/* first unreported failure (errno) */
	wait_queue_head_t	idle;		/* one was answered */
};

struct dxg_req {
	refcount_t		ref;
	/* An async one's, while queued; a queued sync one counts in cb_users. */
	struct dxg_async	*async;
	struct completion	done;		/* complete_all(): re-waitable */
	struct list_head	node;		/* dxg->pending, under vq_lock */
	u64			id;
	int			result;		/* -ENODEV once detached */
	bool			queued;		/* given to the device */
	bool			answered;
	u32			used_len;
	size_t			out_len;
	size_t			in_len;
	struct dxgv_frame_header *out;		/* + command */
	struct dxgv_frame_header *in;		/* + reply */
};

/* ---- statuses ------------------------------------------------------------ */

/* Maps a failure NTSTATUS to an errno as dxgkrnl does (§4). */
int dxgvm_errno(int status)
{
	if (status >= 0)
		return status;
	switch ((u32)status) {
	case STATUS_NOT_IMPLEMENTED:
	case STATUS_NOT_SUPPORTED:
		return -EPERM;
	case STATUS_INVALID_HANDLE:
		return -EBADF;
	case STATUS_NO_MEMORY:
		return -ENOMEM;
	case STATUS_ILLEGAL_INSTRUCTION:
		return -EOPNOTSUPP;
	case STATUS_ACCESS_DENIED:
		return -EACCES;
	case STATUS_BUFFER_TOO_SMALL:
		return -EOVERFLOW;
	case STATUS_OBJECT_TYPE_MISMATCH:
		return -EPROTOTYPE;
	case STATUS_OBJECT_NAME_NOT_FOUND:
		return -ENOENT;
	case STATUS_OBJECT_NAME_COLLISION:
		return -EEXIST;
	case STATUS_DEVICE_REMOVED:
		return -ENODEV;
	case STATUS_GRAPHICS_ALLOCATION_BUSY:
		return -EINPROGRESS;
	default:
		/* UNSUCCESSFUL, INVALID_PARAMETER, overflow, limits, ... */
		return -EINVAL;
	}
}

/* ---- requests ------------------------------------------------------------ */

struct dxg_req *dxgvm_req_alloc(size_t cmd_len, size_t reply_len)
{
	struct dxg_req *req;

	if (cmd_len > DXG_MAX_VM_BUS_PACKET_SIZE ||
	    reply_len > DXG_MAX_VM_BUS_PACKET_SIZE)
		return NULL;
	req = kzalloc(sizeof(*req), GFP_KERNEL);
	if (!req)
		return NULL;
	refcount_set(&req->ref, 1);
	init_completion(&req->done);
	INIT_LIST_HEAD(&req->node);
	req->out_len = sizeof(*req->out) + cmd_len;
	req->in_len = sizeof(*req->in) + reply_len;
	/* kmalloc memory: the device reaches it by physical address. */
	req->out = kzalloc(req->out_len, GFP_KERNEL);
	req->in = kzalloc(req->in_len, GFP_KERNEL);
	if (!req->out || !req->in) {
		dxgvm_req_put(req);
		return NULL;
	}
	return req;
}

void *dxgvm_req_cmd(struct dxg_req *req)
{
	return req->out + 1;
}

void *dxgvm_req_reply(struct dxg_req *req)
{
	return req->in + 1;
}

/* May run in the queue's interrupt callback. */
void dxgvm_req_put(struct dxg_req *req)
{
	if (!req || !refcount_dec_and_test(&req->ref))
		return;
	kfree(req->out);
	kfree(req->in);
	kfree(req);
}

static int dxgvm_req_check(struct dxg_req *req);

static void dxgvm_async_done(struct dxg_async *a, int err)
{
	if (err)
		atomic_cmpxchg(&a->error, 0, err);
	atomic64_inc(&a->answered);
	wake_up_all(&a->idle);
	dxgvm_async_put(a);
}

/* Called with vq_lock held: the device has handed the request back. */
static void dxgvm_req_finish(struct dxg_vdev *dxg, struct dxg_req *req,
			     u32 used_len, int result)
{
	list_del_init(&req->node);
	req->used_len = used_len;
	req->result = result;
	req->answered = true;
	/* Each chain is finished once: reaped, or detached at removal. */
	if (req->async) {
		dxgvm_async_done(req->async, dxgvm_req_check(req));
		req->async = NULL;
	} else {
		dxg->cb_users--;
	}
	complete_all(&req->done);
	dxgvm_req_put(req);	/* the ring's reference */
}

/* With vq_lock held: finishes every request the device handed back. */
static bool dxgvm_reap(struct dxg_vdev *dxg)
{
	struct dxg_req *req;
	unsigned int len;
	bool any = false;

	while ((req = virtqueue_get_buf(dxg->req_vq, &len))) {
		dxgvm_req_finish(dxg, req, len, 0);
		any = true;
	}
	return any;
}

/*
 * With vq_lock held: someone will wait for a used buffer, so interrupts
 * must be on. Buffers already used are reaped here, since enabling them
 * raises no interrupt for those.
 */
static void dxgvm_cb_get_locked(struct dxg_vdev *dxg)
{
	if (dxg->cb_users++ || dxg->removed)
		return;
	if (!virtqueue_enable_cb(dxg->req_vq) && dxgvm_reap(dxg))
		wake_up_all(&dxg->ring_wait);
}

static void dxgvm_cb_get(struct dxg_vdev *dxg)
{
	unsigned long irqflags;

	spin_lock_irqsave(&dxg->vq_lock, irqflags);
	dxgvm_cb_get_locked(dxg);
	spin_unlock_irqrestore(&dxg->vq_lock, irqflags);
}

/* The callback turns interrupts off again once nobody waits. */
static void dxgvm_cb_put(struct dxg_vdev *dxg)
{
	unsigned long irqflags;

	spin_lock_irqsave(&dxg->vq_lock, irqflags);
	dxg->cb_users--;
	spin_unlock_irqrestore(&dxg->vq_lock, irqflags);
}

/* Checks the reply frame; 0 when the payload is the command's reply. */
static int dxgvm_req_check(struct dxg_req *req)
{
	const struct dxgv_frame_header *hdr = req->in;
	size_t reply_len = req->in_len - sizeof(*hdr);
	int status;

	if (req->result)
		return req->result;
	if (req->used_len < sizeof(*hdr) || hdr->magic != DXGV_FRAME_MAGIC ||
	    hdr->version != DXGV_FRAME_VERSION ||
	    hdr->flags != DXGV_FRAME_FLAG_REPLY || hdr->request_id != req->id) {
		pr_warn_ratelimited("bad reply frame to request %llu (%u bytes)\n",
				     req->id, req->used_len);
		return -EPROTO;
	}
	status = hdr->status.v;
	if (status < 0) {
		pr_debug("request %llu failed: status %#x\n",
			req->id, status);
		return dxgvm_errno(status);
	}
	if (hdr->payload_len != reply_len ||
	    req->used_len < sizeof(*hdr) + reply_len) {
		pr_warn_ratelimited("reply to request %llu has %u bytes, expected %zu\n",
				     req->id, hdr->payload_len, reply_len);
		return -EPROTO;
	}
	return 0;
}

/* The module parameter in jiffies; at least one, so 0 cannot mean "never". */
static unsigned long dxgvm_timeout(void)
{
	return max(msecs_to_jiffies(READ_ONCE(dxg_request_timeout_ms)), 1UL);
}

static bool dxgvm_ring_has_room(struct dxg_vdev *dxg)
{
	/* A hint only: virtqueue_add_sgs() under the lock decides. */
	return READ_ONCE(dxg->removed) || READ_ONCE(dxg->req_vq->num_free) >= 2;
}

/*
 * Waits for the request's reply until the module's timeout; can be called
 * again on a request that timed out earlier. Returns 0 or an errno.
 */
int dxgvm_req_wait(struct dxg_vdev *dxg, struct dxg_req *req,
		   unsigned int flags)
{
	unsigned long timeout = dxgvm_timeout();
	unsigned long irqflags;
	bool answered;
	long ret;

	if (flags & DXGVM_WAIT_KILLABLE)
		ret = wait_for_completion_killable_timeout(&req->done, timeout);
	else
		ret = wait_for_completion_timeout(&req->done, timeout);

	spin_lock_irqsave(&dxg->vq_lock, irqflags);
	answered = req->answered;
	spin_unlock_irqrestore(&dxg->vq_lock, irqflags);
	if (!answered) {
		/* The ring keeps its reference: the buffers stay alive. */
		if (ret < 0)
			return -EINTR;
		pr_warn_ratelimited("no reply to request %llu in %u ms\n",
				     req->id, dxg_request_timeout_ms);
		return -ETIMEDOUT;
	}
	return dxgvm_req_check(req);
}

/*
 * Puts a request whose command and reply buffers the caller filled
 * through dxgvm_req_cmd() on the ring. A full ring is waited on, within
 * the module's timeout. `async` (or NULL) accounts an asynchronous one.
 */
static int dxgvm_req_queue(struct dxg_vdev *dxg, struct dxg_req *req,
			   const struct winluid *luid, unsigned int flags,
			   struct dxg_async *async)
{
	unsigned long timeout = dxgvm_timeout();
	unsigned long deadline = jiffies + timeout;
	struct scatterlist sg_out, sg_in, *sgs[2];
	unsigned long irqflags;
	int err;

	req->id = atomic64_inc_return(&dxg->next_request_id);
	req->out->magic = DXGV_FRAME_MAGIC;
	req->out->version = DXGV_FRAME_VERSION;
	req->out->flags = 0;
	req->out->request_id = req->id;
	req->out->payload_len = req->out_len - sizeof(*req->out);
	req->out->status.v = 0;
	if (luid)
		req->out->vgpu_luid = *luid;
	sg_init_one(&sg_out, req->out, req->out_len);
	sg_init_one(&sg_in, req->in, req->in_len);
	sgs[0] = &sg_out;
	sgs[1] = &sg_in;

	for (;;) {
		bool reaped;
		long left;

		spin_lock_irqsave(&dxg->vq_lock, irqflags);
		if (dxg->removed) {
			spin_unlock_irqrestore(&dxg->vq_lock, irqflags);
			return -ENODEV;
		}
		/* Room, and the results of earlier async requests, first. */
		reaped = dxgvm_reap(dxg);
		err = virtqueue_add_sgs(dxg->req_vq, sgs, 1, 1, req, GFP_ATOMIC);
		if (!err) {
			refcount_inc(&req->ref);	/* the ring's */
			req->queued = true;
			if (async) {
				refcount_inc(&async->ref);
				atomic64_inc(&async->queued);
				req->async = async;
			} else {
				dxgvm_cb_get_locked(dxg);
			}
			list_add_tail(&req->node, &dxg->pending);
			/* Under the lock: removal cannot free the queue. */
			virtqueue_kick(dxg->req_vq);
			spin_unlock_irqrestore(&dxg->vq_lock, irqflags);
			/* Senders waiting for room need not wait for an interrupt. */
			if (reaped)
				wake_up_all(&dxg->ring_wait);
			return 0;
		}
		spin_unlock_irqrestore(&dxg->vq_lock, irqflags);
		if (reaped)
			wake_up_all(&dxg->ring_wait);
		if (err != -ENOSPC)
			return err;

		/* Ring full: wait for the device to return some chains. */
		left = (long)(deadline - jiffies);
		if (left <= 0)
			return -ETIMEDOUT;
		dxgvm_cb_get(dxg);
		if (flags & DXGVM_WAIT_KILLABLE)
			left = wait_event_killable_timeout(dxg->ring_wait,
							   dxgvm_ring_has_room(dxg),
							   left);
		else
			left = wait_event_timeout(dxg->ring_wait,
						  dxgvm_ring_has_room(dxg), left);
		dxgvm_cb_put(dxg);
		if (left < 0)
			return -EINTR;
	}
}

/*
 * Sends a request whose command and reply buffers the caller filled
 * through dxgvm_req_cmd(), and waits for the reply.
 */
int dxgvm_req_submit(struct dxg_vdev *dxg, struct dxg_req *req,
		     const struct winluid *luid, unsigned int flags)
{
	int err = dxgvm_req_queue(dxg, req, luid, flags, NULL);

	return err ? err : dxgvm_req_wait(dxg, req, flags);
}

/* ---- asynchronous requests ------------------------------------------------ */

struct dxg_async *dxgvm_async_alloc(void)
{
	struct dxg_async *a = kzalloc(sizeof(*a), GFP_KERNEL);

	if (!a)
		return NULL;
	refcount_set(&a->ref, 1);
	init_waitqueue_head(&a->idle);
	return a;
}

/* May run in the queue's interrupt callback. */
void dxgvm_async_put(struct dxg_async *a)
{
	if (a && refcount_dec_and_test(&a->ref))
		kfree(a);
}

/*
 * Sends a request without waiting for it; takes the caller's reference.
 * Its reply is only its status, which the process's next call sees.
 */
int dxgvm_req_send_async(struct dxg_vdev *dxg, struct dxg_req *req,
			 const struct winluid *luid, struct dxg_async *async)
{
	int err = dxgvm_req_queue(dxg, req, luid, DXGVM_WAIT_KILLABLE, async);

	dxgvm_req_put(req);
	return err;
}

/* Takes the first failure of an async request not yet reported; or 0. */
int dxgvm_async_error(struct dxg_async *a)
{
	return atomic_read(&a->error) ? atomic_xchg(&a->error, 0) : 0;
}

/*
 * Waits until the device has answered every async request of the process,
 * then takes the first failure among them (0 if none). Called before any
 * other call of the process, so that a submission's error reaches it and
 * nothing overtakes the submissions.
 */
int dxgvm_async_settle(struct dxg_vdev *dxg, struct dxg_async *a,
		       unsigned int flags)
{
	s64 target = atomic64_read(&a->queued);
	long left;

	if (atomic64_read(&a->answered) < target) {
		dxgvm_cb_get(dxg);
		if (flags & DXGVM_WAIT_KILLABLE)
			left = wait_event_killable_timeout(a->idle,
				atomic64_read(&a->answered) >= target,
				dxgvm_timeout());
		else
			left = wait_event_timeout(a->idle,
				atomic64_read(&a->answered) >= target,
				dxgvm_timeout());
		dxgvm_cb_put(dxg);
		if (left < 0)
			return -EINTR;
		if (!left) {
			pr_warn_ratelimited("async requests unanswered in %u ms\n",
					    dxg_request_timeout_ms);
			return -ETIMEDOUT;
		}
	}
	return dxgvm_async_error(a);
}

/* One small request with a fixed reply, sent and waited for. */
static int dxgvm_call(struct dxg_vdev *dxg, const struct winluid *luid,
		      const void *cmd, size_t cmd_len,
		      void *reply, size_t reply_len, unsigned int flags)
{
	struct dxg_req *req;
	int ret;

	req = dxgvm_req_alloc(cmd_len, reply_len);
	if (!req)
		return -ENOMEM;
	memcpy(dxgvm_req_cmd(req), cmd, cmd_len);
	ret = dxgvm_req_submit(dxg, req, luid, flags);
	if (!ret && reply_len)
		memcpy(reply, dxgvm_req_reply(req), reply_len);
	dxgvm_req_put(req);
	return ret;
}

/* A command whose reply is a bare NTSTATUS: returns errno or >= 0 status. */
static int dxgvm_call_status(struct dxg_vdev *dxg, const struct winluid *luid,
			     const void *cmd, size_t cmd_len,
			     unsigned int flags)
{
	struct ntstatus status;
	int ret;

	ret = dxgvm_call(dxg, luid, cmd, cmd_len, &status, sizeof(status),
			 flags);
	return ret ? ret : dxgvm_errno(status.v);
}

/* ---- queues -------------------------------------------------------------- */

static void dxgvm_req_done(struct virtqueue *vq)
{
	struct dxg_vdev *dxg = vq->vdev->priv;
	unsigned long irqflags;

	spin_lock_irqsave(&dxg->vq_lock, irqflags);
	do {
		virtqueue_disable_cb(vq);
		dxgvm_reap(dxg);
		if (unlikely(virtqueue_is_broken(vq)))
			break;
		/* Nobody waits: async completions wait for the next send. */
		if (!dxg->cb_users)
			break;
	} while (!virtqueue_enable_cb(vq));
	spin_unlock_irqrestore(&dxg->vq_lock, irqflags);
	wake_up_all(&dxg->ring_wait);
}

/* ---- CPU waits ------------------------------------------------------------ */

/* eventfd_signal() lost its count argument in 6.8. */
static void dxgvm_event_signal(struct eventfd_ctx *event)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 8, 0)
	eventfd_signal(event);
#else
	eventfd_signal(event, 1);
#endif
}

/* Ends an async waiter already off the list: signals it if asked, frees it. */
static void dxgvm_async_waiter_free(struct dxg_waiter *w, bool signal)
{
	if (signal)
		dxgvm_event_signal(w->event);
	eventfd_ctx_put(w->event);
	kfree(w);
}

/* Registers a waiter under a fresh cookie before its request is sent. */
void dxgvm_waiter_add(struct dxg_vdev *dxg, struct dxg_waiter *w)
{
	unsigned long irqflags;

	init_completion(&w->done);
	w->result = 0;
	w->event = NULL;
	w->owner = NULL;
	w->cookie = atomic64_inc_return(&dxg->next_cookie);
	spin_lock_irqsave(&dxg->waiter_lock, irqflags);
	if (dxg->waiters_dead) {
		w->result = -ENODEV;
		INIT_LIST_HEAD(&w->node);
		complete(&w->done);
	} else {
		list_add_tail(&w->node, &dxg->waiters);
	}
	spin_unlock_irqrestore(&dxg->waiter_lock, irqflags);
}

/* Forgets the cookie: a late SIGNALGUESTEVENT for it finds nothing. */
void dxgvm_waiter_del(struct dxg_vdev *dxg, struct dxg_waiter *w)
{
	unsigned long irqflags;

	spin_lock_irqsave(&dxg->waiter_lock, irqflags);
	list_del_init(&w->node);
	spin_unlock_irqrestore(&dxg->waiter_lock, irqflags);
}

/*
 * An async wait (async_event): a waiter of its own, owning `event` (a
 * reference the caller took), on the list before the request goes. On
 * success *cookie names it; it may be signalled and freed at any moment
 * after, so the caller keeps only the cookie. -ENODEV (event put) if the
 * device is gone.
 */
int dxgvm_async_waiter_add(struct dxg_vdev *dxg, struct dxg_process *owner,
			   struct eventfd_ctx *event, u64 *cookie)
{
	struct dxg_waiter *w = kzalloc(sizeof(*w), GFP_KERNEL);
	unsigned long irqflags;
	bool dead;

	if (!w) {
		eventfd_ctx_put(event);
		return -ENOMEM;
	}
	w->event = event;
	w->owner = owner;
	w->cookie = atomic64_inc_return(&dxg->next_cookie);
	*cookie = w->cookie;
	spin_lock_irqsave(&dxg->waiter_lock, irqflags);
	dead = dxg->waiters_dead;
	if (!dead)
		list_add_tail(&w->node, &dxg->waiters);
	spin_unlock_irqrestore(&dxg->waiter_lock, irqflags);
	if (dead) {
		dxgvm_async_waiter_free(w, false);
		return -ENODEV;
	}
	return 0;
}

/* Takes an async waiter back (if no event took it first); signals it if asked. */
void dxgvm_async_waiter_end(struct dxg_vdev *dxg, u64 cookie, bool signal)
{
	struct dxg_waiter *w, *found = NULL;
	unsigned long irqflags;

	spin_lock_irqsave(&dxg->waiter_lock, irqflags);
	list_for_each_entry(w, &dxg->waiters, node) {
		if (w->cookie == cookie && w->event) {
			list_del_init(&w->node);
			found = w;
			break;
		}
	}
	spin_unlock_irqrestore(&dxg->waiter_lock, irqflags);
	if (found)
		dxgvm_async_waiter_free(found, signal);
}

/* The process is closing: its async waits end unsignalled. */
void dxgvm_async_waiters_drop(struct dxg_vdev *dxg, struct dxg_process *owner)
{
	struct dxg_waiter *w, *tmp;
	unsigned long irqflags;
	LIST_HEAD(gone);

	spin_lock_irqsave(&dxg->waiter_lock, irqflags);
	list_for_each_entry_safe(w, tmp, &dxg->waiters, node) {
		if (w->event && w->owner == owner)
			list_move_tail(&w->node, &gone);
	}
	spin_unlock_irqrestore(&dxg->waiter_lock, irqflags);
	list_for_each_entry_safe(w, tmp, &gone, node)
		dxgvm_async_waiter_free(w, false);
}

/* Wakes the waiter of one cookie, or signals its event; irq context. */
static void dxgvm_signal_guest_event(struct dxg_vdev *dxg, u64 cookie)
{
	struct dxg_waiter *w, *async = NULL;
	unsigned long irqflags;
	bool found = false;

	spin_lock_irqsave(&dxg->waiter_lock, irqflags);
	list_for_each_entry(w, &dxg->waiters, node) {
		if (w->cookie == cookie) {
			list_del_init(&w->node);
			if (w->event)
				async = w;
			else
				complete(&w->done);
			found = true;
			break;
		}
	}
	spin_unlock_irqrestore(&dxg->waiter_lock, irqflags);
	if (async)
		dxgvm_async_waiter_free(async, true);
	if (!found)
		pr_debug("guest event %llu: no waiter (timed out or interrupted)\n",
			 cookie);
}

/*
 * The device is gone: every waiter wakes with -ENODEV, and every async
 * wait's event is signalled (its fences will never move; a waiter on the
 * event must not sleep forever).
 */
static void dxgvm_waiters_fail(struct dxg_vdev *dxg)
{
	struct dxg_waiter *w, *tmp;
	unsigned long irqflags;
	LIST_HEAD(async);

	spin_lock_irqsave(&dxg->waiter_lock, irqflags);
	dxg->waiters_dead = true;
	list_for_each_entry_safe(w, tmp, &dxg->waiters, node) {
		if (w->event) {
			list_move_tail(&w->node, &async);
			continue;
		}
		list_del_init(&w->node);
		w->result = -ENODEV;
		complete(&w->done);
	}
	spin_unlock_irqrestore(&dxg->waiter_lock, irqflags);
	list_for_each_entry_safe(w, tmp, &async, node)
		dxgvm_async_waiter_free(w, true);
}

/*
 * A host-to-guest command (§5.2). SIGNALGUESTEVENT (and its passive twin,
 * which needs nothing done in thread context here) wakes the CPU wait
 * registered under its cookie. Runs in the queue's callback.
 */
static void dxgvm_handle_event(struct dxg_vdev *dxg, const void *buf,
			       unsigned int len)
{
	const struct dxgv_frame_header *hdr = buf;
	const struct dxgkvmb_command_host_to_vm *cmd;
	const struct dxgkvmb_command_signalguestevent *sig;

	if (len < sizeof(*hdr) + sizeof(*cmd) ||
	    hdr->magic != DXGV_FRAME_MAGIC ||
	    !(hdr->flags & DXGV_FRAME_FLAG_EVENT) ||
	    hdr->payload_len > len - sizeof(*hdr) ||
	    hdr->payload_len < sizeof(*cmd)) {
		pr_warn_ratelimited("malformed event (%u bytes)\n", len);
		return;
	}
	cmd = (const void *)(hdr + 1);
	switch (cmd->command_type) {
	case DXGK_VMBCOMMAND_SIGNALGUESTEVENT:
	case DXGK_VMBCOMMAND_SIGNALGUESTEVENTPASSIVE:
		if (hdr->payload_len < sizeof(*sig)) {
			pr_warn_ratelimited("short SIGNALGUESTEVENT (%u bytes)\n",
					    hdr->payload_len);
			break;
		}
		sig = (const void *)cmd;
		dxgvm_signal_guest_event(dxg, sig->event);
		break;
	default:
		pr_info_ratelimited("event %u ignored (%u bytes)\n",
				     cmd->command_type, hdr->payload_len);
		break;
	}
}

static int dxgvm_event_post(struct dxg_vdev *dxg, void *buf)
{
	struct scatterlist sg;

	sg_init_one(&sg, buf, DXG_EVENT_BUFFER_SIZE);
	return virtqueue_add_inbuf(dxg->event_vq, &sg, 1, buf, GFP_ATOMIC);
}

static void dxgvm_event_done(struct virtqueue *vq)
{
	struct dxg_vdev *dxg = vq->vdev->priv;
	unsigned long irqflags;
	unsigned int len;
	void *buf;

	spin_lock_irqsave(&dxg->evq_lock, irqflags);
	do {
		virtqueue_disable_cb(vq);
		while ((buf = virtqueue_get_buf(vq, &len))) {
			dxgvm_handle_event(dxg, buf, min_t(unsigned int, len,
							   DXG_EVENT_BUFFER_SIZE));
			/* Give the buffer straight back: keep the queue stocked. */
			if (dxgvm_event_post(dxg, buf))
				kfree(buf);
		}
		if (unlikely(virtqueue_is_broken(vq)))
			break;
	} while (!virtqueue_enable_cb(vq));
	virtqueue_kick(vq);
	spin_unlock_irqrestore(&dxg->evq_lock, irqflags);
}

/* Finds the two queues and stocks the event queue (before DRIVER_OK). */
int dxgvm_init_queues(struct dxg_vdev *dxg)
{
	static const char * const names[] = { "request", "event" };
	vq_callback_t *callbacks[] = { dxgvm_req_done, dxgvm_event_done };
	struct virtqueue *vqs[2];
	unsigned int i, n;
	int err;

	BUILD_BUG_ON(DXG_EVENT_BUFFER_SIZE < DXGV_MIN_EVENT_BUFFER);
	err = virtio_find_vqs(dxg->vdev, 2, vqs, callbacks, names, NULL);
	if (err)
		return err;
	dxg->req_vq = vqs[DXGV_REQUEST_QUEUE];
	dxg->event_vq = vqs[DXGV_EVENT_QUEUE];

	n = min_t(unsigned int, DXG_EVENT_BUFFERS,
		  virtqueue_get_vring_size(dxg->event_vq));
	for (i = 0; i < n; i++) {
		void *buf = kzalloc(DXG_EVENT_BUFFER_SIZE, GFP_KERNEL);

		if (!buf || dxgvm_event_post(dxg, buf)) {
			kfree(buf);
			break;
		}
	}
	if (!i) {
		dxg->vdev->config->del_vqs(dxg->vdev);
		return -ENOMEM;
	}
	return 0;
}

/*
 * Device removal: refuse new requests, reset the device so that it lets go
 * of every buffer, fail the requests it held with -ENODEV and free the
 * queues. Waiters wake up and see the error.
 */
void dxgvm_shutdown(struct dxg_vdev *dxg)
{
	struct virtio_device *vdev = dxg->vdev;
	struct dxg_req *req, *tmp;
	unsigned long irqflags;
	void *buf;

	spin_lock_irqsave(&dxg->vq_lock, irqflags);
	dxg->removed = true;
	spin_unlock_irqrestore(&dxg->vq_lock, irqflags);

	virtio_reset_device(vdev);

	spin_lock_irqsave(&dxg->vq_lock, irqflags);
	while ((req = virtqueue_detach_unused_buf(dxg->req_vq)))
		dxgvm_req_finish(dxg, req, 0, -ENODEV);
	/* Nothing should be left; if it is, the ring no longer has it. */
	list_for_each_entry_safe(req, tmp, &dxg->pending, node)
		dxgvm_req_finish(dxg, req, 0, -ENODEV);
	spin_unlock_irqrestore(&dxg->vq_lock, irqflags);
	wake_up_all(&dxg->ring_wait);

	spin_lock_irqsave(&dxg->evq_lock, irqflags);
	while ((buf = virtqueue_detach_unused_buf(dxg->event_vq)))
		kfree(buf);
	spin_unlock_irqrestore(&dxg->evq_lock, irqflags);
	dxgvm_waiters_fail(dxg);

	vdev->config->del_vqs(vdev);
}

/* ---- messages ------------------------------------------------------------ */

static void dxgvm_global_hdr(struct dxgkvmb_command_vm_to_host *hdr,
			     struct d3dkmthandle process,
			     enum dxgkvmb_commandtype_global type)
{
	hdr->command_id = 0;
	hdr->process = process;
	hdr->channel_type = DXGKVMB_VM_TO_HOST;
	hdr->command_type = type;
}

static void dxgvm_vgpu_hdr(struct dxgkvmb_command_vgpu_to_host *hdr,
			   struct d3dkmthandle process,
			   enum dxgkvmb_commandtype type)
{
	hdr->command_id = 0;
	hdr->process = process;
	hdr->channel_type = DXGKVMB_VGPU_TO_HOST;
	hdr->async_msg = 0;
	hdr->reserved = 0;
	hdr->command_type = type;
}

static const struct d3dkmthandle dxg_null_handle;

int dxgvmb_open_adapter(struct dxg_adapter *adapter)
{
	struct dxgkvmb_command_openadapter cmd = {};
	struct dxgkvmb_command_openadapter_return r;
	u32 agreed;
	int ret;

	dxgvm_vgpu_hdr(&cmd.hdr, dxg_null_handle, DXGK_VMBCOMMAND_OPENADAPTER);
	cmd.vmbus_interface_version = DXGK_VMBUS_INTERFACE_VERSION;
	cmd.vmbus_last_compatible_interface_version =
		DXGK_VMBUS_LAST_COMPATIBLE_INTERFACE_VERSION;
	cmd.guest_adapter_luid = adapter->luid;
	ret = dxgvm_call(adapter->dxg, &adapter->luid, &cmd, sizeof(cmd),
			 &r, sizeof(r), 0);
	if (ret)
		return ret;
	if (r.status.v < 0)
		return dxgvm_errno(r.status.v);
	/* The lower current version, if each side still accepts it (§3). */
	agreed = min_t(u32, DXGK_VMBUS_INTERFACE_VERSION,
		       r.vmbus_interface_version);
	if (agreed < DXGK_VMBUS_LAST_COMPATIBLE_INTERFACE_VERSION ||
	    agreed < r.vmbus_last_compatible_interface_version ||
	    !r.host_adapter_handle.v) {
		pr_err("adapter %08x-%08x: host interface %u (oldest %u) is incompatible\n",
			adapter->luid.b, adapter->luid.a,
			r.vmbus_interface_version,
			r.vmbus_last_compatible_interface_version);
		adapter->host_handle = r.host_adapter_handle;
		if (adapter->host_handle.v)
			dxgvmb_close_adapter(adapter);
		return -EPROTO;
	}
	adapter->host_handle = r.host_adapter_handle;
	adapter->interface_version = agreed;
	return 0;
}

int dxgvmb_get_internal_adapter_info(struct dxg_adapter *adapter)
{
	struct dxgkvmb_command_getinternaladapterinfo cmd = {};
	struct dxgkvmb_command_getinternaladapterinfo_return *r;
	unsigned int i;
	int ret;

	r = kzalloc(sizeof(*r), GFP_KERNEL);
	if (!r)
		return -ENOMEM;
	dxgvm_vgpu_hdr(&cmd.hdr, dxg_null_handle,
		       DXGK_VMBCOMMAND_GETINTERNALADAPTERINFO);
	ret = dxgvm_call(adapter->dxg, &adapter->luid, &cmd, sizeof(cmd),
			 r, sizeof(*r), 0);
	if (!ret) {
		adapter->host_adapter_luid = r->host_adapter_luid;
		/* UTF-16 to something printable: ASCII only, '?' for others. */
		for (i = 0; i < ARRAY_SIZE(r->device_description) &&
			    i < sizeof(adapter->description) - 1 &&
			    r->device_description[i]; i++) {
			u16 c = r->device_description[i];

			adapter->description[i] = c >= 0x20 && c < 0x7f ? c : '?';
		}
		adapter->description[i] = '\0';
	}
	kfree(r);
	return ret;
}

int dxgvmb_close_adapter(struct dxg_adapter *adapter)
{
	struct dxgkvmb_command_closeadapter cmd = {};

	dxgvm_vgpu_hdr(&cmd.hdr, dxg_null_handle, DXGK_VMBCOMMAND_CLOSEADAPTER);
	cmd.host_handle = adapter->host_handle;
	return dxgvm_call(adapter->dxg, &adapter->luid, &cmd, sizeof(cmd),
			  NULL, 0, 0);
}

int dxgvmb_set_iospace_region(struct dxg_vdev *dxg)
{
	struct dxgkvmb_command_setiospaceregion cmd = {};

	/* dxvmm maps no aperture: a zero-length region (§3, §9). */
	dxgvm_global_hdr(&cmd.hdr, dxg_null_handle,
			 DXGK_VMBCOMMAND_SETIOSPACEREGION);
	return dxgvm_call_status(dxg, NULL, &cmd, sizeof(cmd), 0);
}

/*
 * Ends a CREATEPROCESS wait: keeps a request the device still holds (a
 * timeout or a fatal signal) for the next attempt, else takes the handle
 * out of the reply and drops the request.
 */
static int dxgvmb_create_process_done(struct dxg_process *proc, int ret)
{
	struct dxg_req *req = proc->create_req;
	const struct dxgkvmb_command_createprocess_return *r;

	if ((ret == -ETIMEDOUT || ret == -EINTR) && req->queued)
		return ret;
	proc->create_req = NULL;
	if (!ret) {
		r = dxgvm_req_reply(req);
		if (r->hprocess.v)
			proc->host_handle = r->hprocess;
		else
			ret = -ENOMEM;	/* a null handle is the host's failure */
	}
	dxgvm_req_put(req);
	return ret;
}

/*
 * CREATEPROCESS, called with proc->lock held on the process's first ioctl
 * that needs the host. A request that times out stays in proc->create_req
 * and is waited for again rather than sent twice, so the host never holds
 * a process the guest does not know.
 */
int dxgvmb_create_process(struct dxg_process *proc)
{
	struct dxgkvmb_command_createprocess *cmd;
	char comm[TASK_COMM_LEN];
	unsigned int i;
	int ret;

	if (proc->create_req) {
		ret = dxgvm_req_wait(proc->dxg, proc->create_req,
				     DXGVM_WAIT_KILLABLE);
		return dxgvmb_create_process_done(proc, ret);
	}
	proc->create_req = dxgvm_req_alloc(sizeof(*cmd),
					   sizeof(struct dxgkvmb_command_createprocess_return));
	if (!proc->create_req)
		return -ENOMEM;
	cmd = dxgvm_req_cmd(proc->create_req);
	dxgvm_global_hdr(&cmd->hdr, dxg_null_handle,
			 DXGK_VMBCOMMAND_CREATEPROCESS);
	/* An id, not a kernel pointer: nothing to leak to the host. */
	cmd->process = proc->id;
	cmd->process_id = pid_vnr(proc->tgid);
	get_task_comm(comm, current);
	for (i = 0; i < sizeof(comm) && comm[i]; i++)
		cmd->process_name[i] = (u8)comm[i];
	cmd->linux_process = 1;
	ret = dxgvm_req_submit(proc->dxg, proc->create_req, NULL,
			       DXGVM_WAIT_KILLABLE);
	return dxgvmb_create_process_done(proc, ret);
}

/*
 * The last file of the process was released: DESTROYPROCESS frees every
 * host object it owns. Not killable: the process may be exiting.
 */
void dxgvmb_release_process(struct dxg_process *proc)
{
	struct dxgkvmb_command_destroyprocess cmd = {};
	int ret;

	if (proc->create_req) {
		/* A CREATEPROCESS the host has not answered: give it time. */
		ret = dxgvm_req_wait(proc->dxg, proc->create_req, 0);
		if (!ret) {
			const struct dxgkvmb_command_createprocess_return *r =
				dxgvm_req_reply(proc->create_req);

			proc->host_handle = r->hprocess;
		}
		dxgvm_req_put(proc->create_req);
		proc->create_req = NULL;
	}
	if (!proc->host_handle.v)
		return;
	dxgvm_global_hdr(&cmd.hdr, proc->host_handle,
			 DXGK_VMBCOMMAND_DESTROYPROCESS);
	ret = dxgvm_call_status(proc->dxg, NULL, &cmd, sizeof(cmd), 0);
	if (ret < 0 && ret != -ENODEV)
		pr_warn_ratelimited("DESTROYPROCESS failed: %d\n", ret);
	proc->host_handle.v = 0;
}

int dxgvmb_create_device(struct dxg_process *proc,
			 struct dxg_adapter *adapter,
			 struct d3dkmt_createdeviceflags flags,
			 struct d3dkmthandle *device)
{
	struct dxgkvmb_command_createdevice cmd = {};
	struct dxgkvmb_command_createdevice_return r;
	int ret;

	dxgvm_vgpu_hdr(&cmd.hdr, proc->host_handle, DXGK_VMBCOMMAND_CREATEDEVICE);
	cmd.flags = flags;
	ret = dxgvm_call(proc->dxg, &adapter->luid, &cmd, sizeof(cmd),
			 &r, sizeof(r), DXGVM_WAIT_KILLABLE);
	if (ret)
		return ret;
	if (!r.device.v)
		return -ENOMEM;
	*device = r.device;
	return 0;
}

int dxgvmb_destroy_device(struct dxg_process *proc,
			  struct dxg_adapter *adapter,
			  struct d3dkmthandle device)
{
	struct dxgkvmb_command_flushdevice flush = {};
	struct dxgkvmb_command_destroydevice cmd = {};
	int ret;

	/*
	 * Not killable: the guest has already dropped the handle, so the
	 * host must hear of it. FLUSHDEVICE's result does not matter; the
	 * device goes either way.
	 */
	dxgvm_vgpu_hdr(&flush.hdr, proc->host_handle, DXGK_VMBCOMMAND_FLUSHDEVICE);
	flush.device = device;
	ret = dxgvm_call_status(proc->dxg, &adapter->luid, &flush, sizeof(flush), 0);
	if (ret == -ENODEV || ret == -ETIMEDOUT)
		return ret;

	dxgvm_vgpu_hdr(&cmd.hdr, proc->host_handle, DXGK_VMBCOMMAND_DESTROYDEVICE);
	cmd.device = device;
	return dxgvm_call_status(proc->dxg, &adapter->luid, &cmd, sizeof(cmd), 0);
}

int dxgvmb_query_adapter_info(struct dxg_process *proc,
			      struct dxg_adapter *adapter, u32 type,
			      void __user *data, u32 size)
{
	struct dxgkvmb_command_queryadapterinfo *cmd;
	struct ntstatus *status;
	struct dxg_req *req;
	int ret;

	req = dxgvm_req_alloc(sizeof(*cmd) + size, sizeof(*status) + size);
	if (!req)
		return -ENOMEM;
	cmd = dxgvm_req_cmd(req);
	dxgvm_vgpu_hdr(&cmd->hdr, proc->host_handle,
		       DXGK_VMBCOMMAND_QUERYADAPTERINFO);
	cmd->query_type = type;
	cmd->private_data_size = size;
	/* The caller's buffer goes too: some queries take input in it. */
	if (copy_from_user(cmd + 1, data, size)) {
		ret = -EFAULT;
		goto out;
	}
	ret = dxgvm_req_submit(proc->dxg, req, &adapter->luid,
			       DXGVM_WAIT_KILLABLE);
	if (ret)
		goto out;
	status = dxgvm_req_reply(req);
	ret = dxgvm_errno(status->v);
	if (ret >= 0 && copy_to_user(data, status + 1, size))
		ret = -EFAULT;
out:
	dxgvm_req_put(req);
	return ret;
}

int dxgvmb_query_video_memory_info(struct dxg_process *proc,
				   struct dxg_adapter *adapter,
				   struct d3dkmt_queryvideomemoryinfo *args)
{
	struct dxgkvmb_command_queryvideomemoryinfo cmd = {};
	struct dxgkvmb_command_queryvideomemoryinfo_return r;
	int ret;

	dxgvm_vgpu_hdr(&cmd.hdr, proc->host_handle,
		       DXGK_VMBCOMMAND_QUERYVIDEOMEMORYINFO);
	cmd.adapter = adapter->host_handle;
	cmd.memory_segment_group = args->memory_segment_group;
	cmd.physical_adapter_index = args->physical_adapter_index;
	ret = dxgvm_call(proc->dxg, &adapter->luid, &cmd, sizeof(cmd),
			 &r, sizeof(r), DXGVM_WAIT_KILLABLE);
	if (ret)
		return ret;
	args->budget = r.budget;
	args->current_usage = r.current_usage;
	args->current_reservation = r.current_reservation;
	args->available_for_reservation = r.available_for_reservation;
	return 0;
}

/* ---- the compute profile (§2.6) --------------------------------------------- */

void dxgvm_vgpu_header(struct dxgkvmb_command_vgpu_to_host *hdr,
		       struct dxg_process *proc, u32 type)
{
	dxgvm_vgpu_hdr(hdr, proc->host_handle, type);
}

/* Sends a request the caller built, on the adapter's behalf. */
int dxgvm_send(struct dxg_process *proc, struct dxg_adapter *adapter,
	       struct dxg_req *req, unsigned int flags)
{
	return dxgvm_req_submit(proc->dxg, req, &adapter->luid, flags);
}

int dxgvm_send_status(struct dxg_process *proc, struct dxg_adapter *adapter,
		      const void *cmd, size_t cmd_len, unsigned int flags)
{
	return dxgvm_call_status(proc->dxg, &adapter->luid, cmd, cmd_len, flags);
}

int dxgvm_send_reply(struct dxg_process *proc, struct dxg_adapter *adapter,
		     const void *cmd, size_t cmd_len, void *reply,
		     size_t reply_len, unsigned int flags)
{
	return dxgvm_call(proc->dxg, &adapter->luid, cmd, cmd_len, reply,
			  reply_len, flags);
}

/* Entries of 4 KiB guest pages one SETEXISTINGSYSMEMPAGES carries (§2.4). */
#define DXG_SYSMEM_PAGES_PER_MSG \
	((DXG_MAX_VM_BUS_PACKET_SIZE - \
	  sizeof(struct dxgkvmb_command_setexistingsysmempages)) / sizeof(u64))

/*
 * Hands every page of a CPU-visible allocation to the host, in 4 KiB page
 * frame numbers (§2.6.2), as many messages as it takes.
 */
int dxgvmb_set_sysmem_pages(struct dxg_process *proc, struct dxg_object *obj)
{
	const unsigned long per_page = PAGE_SIZE / SZ_4K;
	u64 total = obj->size / SZ_4K, done = 0;
	struct dxgkvmb_command_setexistingsysmempages *cmd;
	struct dxg_req *req;
	int ret = 0;
	u32 n, i;
	u64 *pfns;

	BUILD_BUG_ON(DXG_SYSMEM_PAGES_PER_MSG != 16379);
	while (done < total) {
		n = min_t(u64, total - done, DXG_SYSMEM_PAGES_PER_MSG);
		req = dxgvm_req_alloc(sizeof(*cmd) + n * sizeof(u64),
				      sizeof(struct ntstatus));
		if (!req)
			return -ENOMEM;
		cmd = dxgvm_req_cmd(req);
		dxgvm_vgpu_hdr(&cmd->hdr, proc->host_handle,
			       DXGK_VMBCOMMAND_SETEXISTINGSYSMEMPAGES);
		cmd->device = obj->device;
		cmd->allocation = obj->handle;
		cmd->num_pages = n;
		cmd->alloc_offset_in_pages = done;
		pfns = (u64 *)(cmd + 1);
		for (i = 0; i < n; i++) {
			u64 p = done + i;
			struct page *page = obj->pages->pages[p / per_page];

			pfns[i] = (PFN_PHYS(page_to_pfn(page)) >> 12) + p % per_page;
		}
		ret = dxgvm_send(proc, obj->adapter, req, 0);
		if (!ret)
			ret = dxgvm_errno(((struct ntstatus *)
					   dxgvm_req_reply(req))->v);
		dxgvm_req_put(req);
		if (ret < 0)
			return ret;
		done += n;
	}
	return 0;
}

/*
 * DESTROYALLOCATION of handles the guest already took out of its table:
 * not killable, the host must hear of it before the pages are let go.
 */
int dxgvmb_destroy_allocations(struct dxg_process *proc,
			       struct dxg_adapter *adapter,
			       struct d3dkmthandle device,
			       const struct d3dkmthandle *handles, u32 count)
{
	struct dxgkvmb_command_destroyallocation *cmd;
	struct dxg_req *req;
	int ret;

	req = dxgvm_req_alloc(sizeof(*cmd) + count * sizeof(*handles),
			      sizeof(struct ntstatus));
	if (!req)
		return -ENOMEM;
	cmd = dxgvm_req_cmd(req);
	dxgvm_vgpu_hdr(&cmd->hdr, proc->host_handle,
		       DXGK_VMBCOMMAND_DESTROYALLOCATION);
	cmd->device = device;
	cmd->alloc_count = count;
	memcpy(cmd + 1, handles, count * sizeof(*handles));
	ret = dxgvm_send(proc, adapter, req, 0);
	if (!ret)
		ret = dxgvm_errno(((struct ntstatus *)dxgvm_req_reply(req))->v);
	dxgvm_req_put(req);
	return ret;
}

/*
 * The destroy message of a context, queue or sync object the guest took
 * out of its table. Not killable, like DESTROYDEVICE.
 */
int dxgvmb_destroy_object(struct dxg_process *proc, struct dxg_object *obj)
{
	union {
		struct dxgkvmb_command_destroycontext ctx;
		struct dxgkvmb_command_destroyhwqueue hwq;
		struct dxgkvmb_command_destroypagingqueue pq;
		struct dxgkvmb_command_destroysyncobject sync;
	} cmd = {};

	switch (obj->type) {
	case DXG_OBJ_CONTEXT:
		dxgvm_vgpu_hdr(&cmd.ctx.hdr, proc->host_handle,
			       DXGK_VMBCOMMAND_DESTROYCONTEXT);
		cmd.ctx.context = obj->handle;
		return dxgvm_send_status(proc, obj->adapter, &cmd.ctx,
					 sizeof(cmd.ctx), 0);
	case DXG_OBJ_HWQUEUE:
		dxgvm_vgpu_hdr(&cmd.hwq.hdr, proc->host_handle,
			       DXGK_VMBCOMMAND_DESTROYHWQUEUE);
		cmd.hwq.hwqueue = obj->handle;
		return dxgvm_send_status(proc, obj->adapter, &cmd.hwq,
					 sizeof(cmd.hwq), 0);
	case DXG_OBJ_PAGINGQUEUE:
		dxgvm_vgpu_hdr(&cmd.pq.hdr, proc->host_handle,
			       DXGK_VMBCOMMAND_DESTROYPAGINGQUEUE);
		cmd.pq.paging_queue = obj->handle;
		return dxgvm_send_status(proc, obj->adapter, &cmd.pq,
					 sizeof(cmd.pq), 0);
	case DXG_OBJ_SYNCOBJ:
		/* A global command in dxgkrnl, though made per adapter (§5.1). */
		dxgvm_global_hdr(&cmd.sync.hdr, proc->host_handle,
				 DXGK_VMBCOMMAND_DESTROYSYNCOBJECT);
		cmd.sync.sync_object = obj->handle;
		return dxgvm_call_status(proc->dxg, NULL, &cmd.sync,
					 sizeof(cmd.sync), 0);
	default:
		return -EINVAL;
	}
}

/*
 * WAITFORSYNCOBJECTFROMCPU with the waiter's cookie. Returns 0 (satisfied
 * now), STATUS_PENDING (SIGNALGUESTEVENT will follow) or an errno.
 */
int dxgvmb_wait_from_cpu(struct dxg_process *proc, struct dxg_adapter *adapter,
			 struct d3dkmt_waitforsynchronizationobjectfromcpu *args,
			 const struct d3dkmthandle *objects, const u64 *values,
			 u64 cookie)
{
	struct dxgkvmb_command_waitforsyncobjectfromcpu *cmd;
	u32 n = args->object_count;
	struct dxg_req *req;
	u8 *tail;
	int ret;

	req = dxgvm_req_alloc(sizeof(*cmd) + n * (sizeof(*objects) + sizeof(u64)),
			      sizeof(struct ntstatus));
	if (!req)
		return -ENOMEM;
	cmd = dxgvm_req_cmd(req);
	dxgvm_vgpu_hdr(&cmd->hdr, proc->host_handle,
		       DXGK_VMBCOMMAND_WAITFORSYNCOBJECTFROMCPU);
	cmd->device = args->device;
	cmd->object_count = n;
	cmd->flags = args->flags;
	cmd->guest_event_pointer = cookie;
	tail = (u8 *)(cmd + 1);
	memcpy(tail, objects, n * sizeof(*objects));
	memcpy(tail + n * sizeof(*objects), values, n * sizeof(u64));
	ret = dxgvm_send(proc, adapter, req, DXGVM_WAIT_KILLABLE);
	if (!ret)
		ret = dxgvm_errno(((struct ntstatus *)dxgvm_req_reply(req))->v);
	dxgvm_req_put(req);
	return ret;
}
