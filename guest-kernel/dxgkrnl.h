/* SPDX-License-Identifier: GPL-2.0 */
/*
 * dxgkrnl for dxvmm: internal declarations.
 *
 * The module is a virtio driver for the virtio-dxg device (id 61) that
 * serves WSL 2's /dev/dxg ioctl ABI. docs/guest-kernel.md describes the
 * structure, locking and object lifetimes; docs/protocol.md is the spec of
 * the messages.
 */
#ifndef _DXGKRNL_H
#define _DXGKRNL_H

#include <linux/completion.h>
#include <linux/kref.h>
#include <linux/list.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/mutex.h>
#include <linux/pid.h>
#include <linux/spinlock.h>
#include <linux/types.h>
#include <linux/wait.h>
#include <linux/xarray.h>

#include "dxgvmbus.h"

/* NTSTATUS values the driver looks at (docs/protocol.md §4). */
#define STATUS_SUCCESS			0x00000000u
#define STATUS_TIMEOUT			0x00000102u
#define STATUS_PENDING			0x00000103u
#define STATUS_UNSUCCESSFUL		0xC0000001u
#define STATUS_NOT_IMPLEMENTED		0xC0000002u
#define STATUS_INVALID_HANDLE		0xC0000008u
#define STATUS_INVALID_PARAMETER	0xC000000Du
#define STATUS_NO_MEMORY		0xC0000017u
#define STATUS_ILLEGAL_INSTRUCTION	0xC000001Du
#define STATUS_ACCESS_DENIED		0xC0000022u
#define STATUS_BUFFER_TOO_SMALL		0xC0000023u
#define STATUS_OBJECT_TYPE_MISMATCH	0xC0000024u
#define STATUS_OBJECT_NAME_NOT_FOUND	0xC0000034u
#define STATUS_OBJECT_NAME_COLLISION	0xC0000035u
#define STATUS_INTEGER_OVERFLOW		0xC0000095u
#define STATUS_INSUFFICIENT_RESOURCES	0xC000009Au
#define STATUS_NOT_SUPPORTED		0xC00000BBu
#define STATUS_DEVICE_REMOVED		0xC00002B6u
#define STATUS_GRAPHICS_NO_VIDEO_MEMORY	0xC01E0100u
#define STATUS_GRAPHICS_ALLOCATION_BUSY	0xC01E0102u

/* The device must take event buffers of at least this size (§2.3). */
#define DXGV_MIN_EVENT_BUFFER		96
#define DXG_EVENT_BUFFER_SIZE		256
#define DXG_EVENT_BUFFERS		32

/* Private data of QUERYADAPTERINFO: what the guest lets a caller send. */
#define DXG_QAI_MAX_PRIVATE_DATA	(64 * 1024)

/* Per-process table limits: they bound the kernel memory one process pins. */
#define DXG_MAX_ADAPTER_HANDLES		1024
#define DXG_MAX_DEVICES			4096
#define DXG_MAX_OBJECTS			65536	/* allocations, contexts, ... */

/*
 * Fence slots (docs/protocol.md §2.6.4): 8-byte values in zeroed guest
 * pages the host writes, each page mapped read-only into the process once.
 */
#define DXG_FENCE_SLOTS_PER_PAGE	(PAGE_SIZE / sizeof(u64))
#define DXG_FENCE_PAGES			16

/*
 * mmap offsets of /dev/dxg, in pages: 1..DXG_FENCE_PAGES name a fence
 * page, DXG_MAP_ALLOC_FIRST and up an allocation's pages (a key drawn per
 * process). Nothing else maps.
 */
#define DXG_MAP_ALLOC_FIRST		0x1000u

/* Caps on what a caller may make the driver copy (§5.1 limits). */
#define DXG_MAX_PRIV_DATA		(64 * 1024)
#define DXG_MAX_HISTORY_BUFFERS		1024

extern unsigned int dxg_request_timeout_ms;

struct dxg_vdev;
struct dxg_process;

/* One virtual adapter the host opened for this VM at bind time. */
struct dxg_adapter {
	struct dxg_vdev		*dxg;
	struct winluid		luid;		/* from the config space */
	struct d3dkmthandle	host_handle;	/* OPENADAPTER reply */
	u32			interface_version;
	struct winluid		host_adapter_luid;
	char			description[81];
};

/* The bound virtio-dxg device; one per system (/dev/dxg). */
struct dxg_vdev {
	struct kref		ref;		/* probe + one per process */
	struct virtio_device	*vdev;
	struct miscdevice	misc;
	bool			misc_registered;

	/*
	 * vq_lock guards the request queue, the pending list, every
	 * dxg_req's state and the removed flag; it is taken from the
	 * queue's interrupt callback, so always with irqsave.
	 */
	spinlock_t		vq_lock;
	struct virtqueue	*req_vq;
	struct list_head	pending;	/* requests owned by the ring */
	wait_queue_head_t	ring_wait;	/* room in a full ring */
	bool			removed;	/* no new requests */
	unsigned int		cb_users;	/* waiters on used buffers */
	atomic64_t		next_request_id;
	u32			max_payload;

	spinlock_t		evq_lock;	/* the event queue */
	struct virtqueue	*event_vq;

	unsigned int		num_adapters;
	struct dxg_adapter	adapters[DXGV_MAX_ADAPTERS];

	struct mutex		proc_lock;	/* processes, nfiles */
	struct list_head	processes;
	u64			next_process_id;

	/*
	 * CPU waits the host answered STATUS_PENDING, by cookie (its
	 * guest_event_pointer); SIGNALGUESTEVENT completes one from the
	 * event queue's interrupt callback, so irqsave.
	 */
	spinlock_t		waiter_lock;
	struct list_head	waiters;
	atomic64_t		next_cookie;
	bool			waiters_dead;	/* the device is gone */
};

/* One CPU wait registered with the host (§2.6.8). */
struct eventfd_ctx;

struct dxg_waiter {
	struct list_head	node;		/* dxg->waiters, under waiter_lock */
	u64			cookie;
	struct completion	done;
	int			result;		/* -ENODEV once the device is gone */
	/*
	 * An async wait (async_event): nobody sleeps on `done`; the event
	 * is signalled instead and the waiter, allocated, is freed with it.
	 * `owner` is the process whose close drops it unsignalled.
	 */
	struct eventfd_ctx	*event;
	struct dxg_process	*owner;
};

/*
 * The guest pages behind a CPU_VISIBLE allocation: the caller's, pinned,
 * or the driver's, zeroed. Referenced by the allocation, by each vma that
 * maps them and by the process's mmap key table's lookups, so they outlive
 * the allocation while a mapping exists.
 */
struct dxg_pages {
	struct kref		ref;
	unsigned long		npages;
	bool			user;		/* pinned user pages */
	struct page		**pages;
};

enum dxg_obj_type {
	DXG_OBJ_ALLOCATION = 1,
	DXG_OBJ_CONTEXT,
	DXG_OBJ_HWQUEUE,
	DXG_OBJ_PAGINGQUEUE,
	DXG_OBJ_SYNCOBJ,
	/* a hw or paging queue's fence: waited on and signalled, never destroyed */
	DXG_OBJ_QUEUE_FENCE,
};

#define DXG_OBJ_MASK(t)		(1u << (t))
#define DXG_OBJS_FENCE		(DXG_OBJ_MASK(DXG_OBJ_SYNCOBJ) | \
				 DXG_OBJ_MASK(DXG_OBJ_QUEUE_FENCE))

/*
 * A host object of a process other than a device: its host handle, the
 * device it was made on and the guest state that goes with it. The
 * process's table holds one reference; lookups take another for the length
 * of an ioctl.
 */
struct dxg_object {
	struct kref		ref;
	struct list_head	parked;		/* proc->parked, under proc->lock */
	struct dxg_process	*proc;
	enum dxg_obj_type	type;
	bool			marked;		/* a destroy is gathering it */
	struct d3dkmthandle	handle;
	struct d3dkmthandle	device;
	/* hw queue and its fence: the context */
	struct d3dkmthandle	parent;
	struct d3dkmthandle	fence;		/* a queue's fence */
	struct dxg_adapter	*adapter;
	int			slot;		/* fence slot, or -1 */

	/* allocations */
	u64			size;		/* allocation_size */
	bool			cpu_visible;
	u64			sysmem;		/* the caller's pages, or 0 */
	struct dxg_pages	*pages;
	u32			map_key;	/* mmap offset in pages, or 0 */
	unsigned long		uaddr;		/* LOCK2's mapping, or 0 */
};

struct dxg_fence_page {
	struct page		*page;
	unsigned long		uaddr;		/* read-only mapping, or 0 */
	unsigned int		used;
	DECLARE_BITMAP(slots, DXG_FENCE_SLOTS_PER_PAGE);
};

/*
 * A guest process (thread group) that has /dev/dxg open, and its host-side
 * twin. Shared by every file the process opened; freed with the last one.
 */
struct dxg_process {
	struct dxg_vdev		*dxg;
	struct list_head	node;		/* dxg->processes */
	struct pid		*tgid;
	unsigned int		nfiles;		/* under dxg->proc_lock */
	u64			id;		/* sent as CREATEPROCESS.process */
	struct dxg_async	*async;		/* its async submissions */

	/* lock guards everything below; it may be held across a request. */
	struct mutex		lock;
	struct d3dkmthandle	host_handle;	/* 0 until CREATEPROCESS */
	struct dxg_req		*create_req;	/* an unanswered CREATEPROCESS */
	struct xarray		adapters;	/* handle -> struct dxg_adapter */
	unsigned int		num_adapter_handles;
	struct xarray		devices;	/* handle -> struct dxg_adapter */
	unsigned int		num_devices;
	struct xarray		objects;	/* handle -> struct dxg_object */
	unsigned int		num_objects;
	/* objects whose destroy the host never answered: freed at release */
	struct list_head	parked;

	/*
	 * slot_lock guards the fence pages and their slots; the mmap handler
	 * takes it (and the maps xarray's own lock), never proc->lock, since
	 * LOCK2 calls vm_mmap() with proc->lock held.
	 */
	spinlock_t		slot_lock;
	struct dxg_fence_page	fence[DXG_FENCE_PAGES];
	struct xarray		maps;		/* map key -> struct dxg_pages */
};

/* ---- transport (dxgvmbus.c) ------------------------------------------- */

#define DXGVM_WAIT_KILLABLE	(1u << 0)	/* a fatal signal abandons */

struct dxg_req;
struct dxg_async;

int dxgvm_init_queues(struct dxg_vdev *dxg);
void dxgvm_shutdown(struct dxg_vdev *dxg);
int dxgvm_errno(int ntstatus);

struct dxg_req *dxgvm_req_alloc(size_t cmd_len, size_t reply_len);
void *dxgvm_req_cmd(struct dxg_req *req);
void *dxgvm_req_reply(struct dxg_req *req);
void dxgvm_req_put(struct dxg_req *req);
int dxgvm_req_submit(struct dxg_vdev *dxg, struct dxg_req *req,
		     const struct winluid *luid, unsigned int flags);
int dxgvm_req_wait(struct dxg_vdev *dxg, struct dxg_req *req,
		   unsigned int flags);

/* Asynchronous requests (submissions): see dxgvmbus.c. */
extern bool dxg_async_submit;
struct dxg_async *dxgvm_async_alloc(void);
void dxgvm_async_put(struct dxg_async *a);
int dxgvm_req_send_async(struct dxg_vdev *dxg, struct dxg_req *req,
			 const struct winluid *luid, struct dxg_async *async);
int dxgvm_async_error(struct dxg_async *a);
int dxgvm_async_settle(struct dxg_vdev *dxg, struct dxg_async *a,
		       unsigned int flags);

int dxgvmb_open_adapter(struct dxg_adapter *adapter);
int dxgvmb_get_internal_adapter_info(struct dxg_adapter *adapter);
int dxgvmb_close_adapter(struct dxg_adapter *adapter);
int dxgvmb_set_iospace_region(struct dxg_vdev *dxg);
int dxgvmb_create_process(struct dxg_process *proc);
void dxgvmb_release_process(struct dxg_process *proc);
int dxgvmb_create_device(struct dxg_process *proc,
			 struct dxg_adapter *adapter,
			 struct d3dkmt_createdeviceflags flags,
			 struct d3dkmthandle *device);
int dxgvmb_destroy_device(struct dxg_process *proc,
			  struct dxg_adapter *adapter,
			  struct d3dkmthandle device);
int dxgvmb_query_adapter_info(struct dxg_process *proc,
			      struct dxg_adapter *adapter, u32 type,
			      void __user *data, u32 size);
int dxgvmb_query_video_memory_info(struct dxg_process *proc,
				   struct dxg_adapter *adapter,
				   struct d3dkmt_queryvideomemoryinfo *args);

/*
 * The compute profile (§2.6). Each sends one message (SETEXISTINGSYSMEMPAGES
 * as many as it takes) and returns 0, a non-negative NTSTATUS or an errno.
 */
void dxgvm_vgpu_header(struct dxgkvmb_command_vgpu_to_host *hdr,
		       struct dxg_process *proc, u32 type);
int dxgvm_send(struct dxg_process *proc, struct dxg_adapter *adapter,
	       struct dxg_req *req, unsigned int flags);
int dxgvm_send_status(struct dxg_process *proc, struct dxg_adapter *adapter,
		      const void *cmd, size_t cmd_len, unsigned int flags);
int dxgvm_send_reply(struct dxg_process *proc, struct dxg_adapter *adapter,
		     const void *cmd, size_t cmd_len, void *reply,
		     size_t reply_len, unsigned int flags);
int dxgvmb_set_sysmem_pages(struct dxg_process *proc, struct dxg_object *obj);
int dxgvmb_destroy_allocations(struct dxg_process *proc,
			       struct dxg_adapter *adapter,
			       struct d3dkmthandle device,
			       const struct d3dkmthandle *handles, u32 count);
int dxgvmb_destroy_object(struct dxg_process *proc, struct dxg_object *obj);
int dxgvmb_wait_from_cpu(struct dxg_process *proc, struct dxg_adapter *adapter,
			 struct d3dkmt_waitforsynchronizationobjectfromcpu *args,
			 const struct d3dkmthandle *objects,
			 const u64 *values, u64 cookie);
void dxgvm_waiter_add(struct dxg_vdev *dxg, struct dxg_waiter *w);
void dxgvm_waiter_del(struct dxg_vdev *dxg, struct dxg_waiter *w);
int dxgvm_async_waiter_add(struct dxg_vdev *dxg, struct dxg_process *owner,
			   struct eventfd_ctx *event, u64 *cookie);
void dxgvm_async_waiter_end(struct dxg_vdev *dxg, u64 cookie, bool signal);
void dxgvm_async_waiters_drop(struct dxg_vdev *dxg, struct dxg_process *owner);

/* ---- processes and handles (dxgprocess.c) ----------------------------- */

struct dxg_process *dxg_process_open(struct dxg_vdev *dxg);
void dxg_process_close(struct dxg_process *proc);
int dxg_process_host(struct dxg_process *proc, struct d3dkmthandle *host);
int dxg_process_add_adapter(struct dxg_process *proc,
			    struct dxg_adapter *adapter,
			    struct d3dkmthandle *handle);
int dxg_process_remove_adapter(struct dxg_process *proc,
			       struct d3dkmthandle handle);
struct dxg_adapter *dxg_process_adapter(struct dxg_process *proc,
					struct d3dkmthandle handle);
int dxg_process_add_device(struct dxg_process *proc,
			   struct dxg_adapter *adapter,
			   struct d3dkmthandle handle);
struct dxg_adapter *dxg_process_take_device(struct dxg_process *proc,
					    struct d3dkmthandle handle);
struct dxg_adapter *dxg_process_device(struct dxg_process *proc,
				       struct d3dkmthandle handle);

struct dxg_object *dxg_object_new(struct dxg_process *proc,
				  enum dxg_obj_type type,
				  struct dxg_adapter *adapter,
				  struct d3dkmthandle device);
void dxg_object_put(struct dxg_object *obj);
int dxg_process_add_object(struct dxg_process *proc, struct dxg_object *obj,
			   struct d3dkmthandle handle);
struct dxg_object *dxg_process_object(struct dxg_process *proc,
				      struct d3dkmthandle handle, u32 types);
struct dxg_object *dxg_process_take_object(struct dxg_process *proc,
					   struct d3dkmthandle handle,
					   u32 types);
int dxg_process_check_handles(struct dxg_process *proc,
			      struct d3dkmthandle device,
			      const struct d3dkmthandle *handles, u32 count,
			      u32 types);
void dxg_process_drop_children(struct dxg_process *proc, u32 types,
			       struct d3dkmthandle device,
			       struct d3dkmthandle parent);
bool dxg_process_fences_live(struct dxg_process *proc,
			     struct d3dkmthandle device,
			     const struct d3dkmthandle *handles, u32 count);

/* ---- guest pages, fence slots, mmap (dxgmem.c) ------------------------ */

struct dxg_pages *dxg_pages_alloc(unsigned long npages);
struct dxg_pages *dxg_pages_pin(u64 uaddr, unsigned long npages);
void dxg_pages_put(struct dxg_pages *pages);
int dxg_map_allocation(struct file *file, struct dxg_object *obj);
void dxg_unmap_key(struct dxg_process *proc, struct dxg_object *obj);
int dxg_fence_slot_alloc(struct dxg_process *proc, u64 initial, u64 *gpa);
void dxg_fence_slot_free(struct dxg_process *proc, int slot);
int dxg_fence_slot_uaddr(struct file *file, int slot, u64 *uaddr);
void dxg_fence_pages_free(struct dxg_process *proc);
int dxg_mmap(struct file *file, struct vm_area_struct *vma);

/* ---- /dev/dxg (ioctl.c, dxgmodule.c) ---------------------------------- */

long dxg_ioctl(struct file *file, unsigned int cmd, unsigned long arg);
void dxg_vdev_put(struct dxg_vdev *dxg);

#endif /* _DXGKRNL_H */
