// SPDX-License-Identifier: GPL-2.0
/*
 * dxgkrnl for dxvmm: guest processes and their handle tables.
 *
 * Every thread group that opens /dev/dxg has one struct dxg_process, shared
 * by all the files it opened. Its host-side twin is created on the first
 * ioctl that needs the host and destroyed when the last file is released.
 *
 * Adapter handles are made here: values are drawn from one counter for the
 * whole system, so a handle of one process is never a valid handle of
 * another. Device handles are the host's (CREATEDEVICE reply) and are
 * entered in the process's table, which every ioctl consults before a
 * handle reaches the host.
 *
 * Every other host object (allocations, contexts, hardware and paging
 * queues, sync objects and the queues' fences) is a struct dxg_object in
 * the objects table, with its type and device, so a handle of the wrong
 * type or device is refused here. Destroying a device or context drops
 * the guest state of what the host destroyed with it; the process's
 * release drops all of it after DESTROYPROCESS.
 */

#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>

#include "dxgkrnl.h"

static DEFINE_SPINLOCK(dxg_handle_lock);
static u32 dxg_next_handle_index = 1;

/* A fresh adapter handle value; d3dkmthandle's index field, never 0. */
static u32 dxg_new_handle(void)
{
	struct d3dkmthandle h = {};
	u32 index;

	spin_lock(&dxg_handle_lock);
	index = dxg_next_handle_index++;
	if (dxg_next_handle_index >= (1u << 24))
		dxg_next_handle_index = 1;
	spin_unlock(&dxg_handle_lock);
	h.index = index;
	return h.v;
}

struct dxg_process *dxg_process_open(struct dxg_vdev *dxg)
{
	struct pid *tgid = task_tgid(current);
	struct dxg_process *proc;

	mutex_lock(&dxg->proc_lock);
	list_for_each_entry(proc, &dxg->processes, node) {
		if (proc->tgid == tgid) {
			proc->nfiles++;
			goto out;
		}
	}
	proc = kzalloc(sizeof(*proc), GFP_KERNEL);
	if (proc)
		proc->async = dxgvm_async_alloc();
	if (!proc || !proc->async) {
		kfree(proc);
		proc = ERR_PTR(-ENOMEM);
		goto out;
	}
	proc->dxg = dxg;
	proc->tgid = get_pid(tgid);
	proc->nfiles = 1;
	proc->id = ++dxg->next_process_id;
	mutex_init(&proc->lock);
	xa_init(&proc->adapters);
	xa_init(&proc->devices);
	xa_init(&proc->objects);
	INIT_LIST_HEAD(&proc->parked);
	spin_lock_init(&proc->slot_lock);
	xa_init_flags(&proc->maps, XA_FLAGS_ALLOC);
	kref_get(&dxg->ref);
	list_add(&proc->node, &dxg->processes);
out:
	mutex_unlock(&dxg->proc_lock);
	return proc;
}

/* A file of the process was released; the last one ends the process. */
void dxg_process_close(struct dxg_process *proc)
{
	struct dxg_vdev *dxg = proc->dxg;
	struct dxg_object *obj, *tmp;
	unsigned long index;
	bool last;

	mutex_lock(&dxg->proc_lock);
	last = --proc->nfiles == 0;
	if (last)
		list_del(&proc->node);
	mutex_unlock(&dxg->proc_lock);
	if (!last)
		return;

	/*
	 * Submissions still in flight name pages freed below: let the host
	 * take them first (it would anyway, before DESTROYPROCESS).
	 */
	dxgvm_async_settle(dxg, proc->async, 0);
	/* The host frees the process's devices and everything below them. */
	mutex_lock(&proc->lock);
	dxgvmb_release_process(proc);
	mutex_unlock(&proc->lock);
	/* Its async waits can no longer be answered: drop them. */
	dxgvm_async_waiters_drop(dxg, proc);

	/*
	 * The host has let go of every page and slot: unpin and free them.
	 * No vma maps anything any more (each holds a file of the process).
	 */
	xa_for_each(&proc->objects, index, obj) {
		xa_erase(&proc->objects, index);
		dxg_unmap_key(proc, obj);
		dxg_object_put(obj);
	}
	list_for_each_entry_safe(obj, tmp, &proc->parked, parked) {
		list_del(&obj->parked);
		dxg_object_put(obj);
	}
	dxg_fence_pages_free(proc);
	xa_destroy(&proc->objects);
	xa_destroy(&proc->maps);
	/* The tables hold pointers to adapters owned by dxg: nothing to free. */
	xa_destroy(&proc->adapters);
	xa_destroy(&proc->devices);
	mutex_destroy(&proc->lock);
	put_pid(proc->tgid);
	dxgvm_async_put(proc->async);
	kfree(proc);
	dxg_vdev_put(dxg);
}

/* The process's host handle, made by CREATEPROCESS on first use. */
int dxg_process_host(struct dxg_process *proc, struct d3dkmthandle *host)
{
	int ret = 0;

	if (mutex_lock_killable(&proc->lock))
		return -EINTR;
	if (!proc->host_handle.v)
		ret = dxgvmb_create_process(proc);
	*host = proc->host_handle;
	mutex_unlock(&proc->lock);
	return ret;
}

int dxg_process_add_adapter(struct dxg_process *proc,
			    struct dxg_adapter *adapter,
			    struct d3dkmthandle *handle)
{
	int ret = -ENOSPC;
	int tries;

	mutex_lock(&proc->lock);
	if (proc->num_adapter_handles >= DXG_MAX_ADAPTER_HANDLES)
		goto out;
	/* After the counter wraps, a value may still be in use here. */
	for (tries = 0; tries < 8; tries++) {
		handle->v = dxg_new_handle();
		ret = xa_insert(&proc->adapters, handle->v, adapter, GFP_KERNEL);
		if (ret != -EBUSY)
			break;
	}
	if (!ret)
		proc->num_adapter_handles++;
out:
	mutex_unlock(&proc->lock);
	return ret;
}

int dxg_process_remove_adapter(struct dxg_process *proc,
			       struct d3dkmthandle handle)
{
	void *entry;

	mutex_lock(&proc->lock);
	entry = xa_erase(&proc->adapters, handle.v);
	if (entry)
		proc->num_adapter_handles--;
	mutex_unlock(&proc->lock);
	return entry ? 0 : -EBADF;
}

/*
 * The adapter behind one of the process's adapter handles. The adapter
 * lives as long as dxg, which the process holds a reference on, so the
 * pointer stays good after the handle is closed.
 */
struct dxg_adapter *dxg_process_adapter(struct dxg_process *proc,
					struct d3dkmthandle handle)
{
	return handle.v ? xa_load(&proc->adapters, handle.v) : NULL;
}

int dxg_process_add_device(struct dxg_process *proc,
			   struct dxg_adapter *adapter,
			   struct d3dkmthandle handle)
{
	int ret = -ENOSPC;

	mutex_lock(&proc->lock);
	if (proc->num_devices < DXG_MAX_DEVICES) {
		ret = xa_insert(&proc->devices, handle.v, adapter, GFP_KERNEL);
		if (!ret)
			proc->num_devices++;
	}
	mutex_unlock(&proc->lock);
	return ret;
}

/* Removes a device handle from the table; NULL if the process has none. */
struct dxg_adapter *dxg_process_take_device(struct dxg_process *proc,
					    struct d3dkmthandle handle)
{
	struct dxg_adapter *adapter;

	if (!handle.v)
		return NULL;
	mutex_lock(&proc->lock);
	adapter = xa_erase(&proc->devices, handle.v);
	if (adapter)
		proc->num_devices--;
	mutex_unlock(&proc->lock);
	return adapter;
}

/* A device of the process, left in the table. */
struct dxg_adapter *dxg_process_device(struct dxg_process *proc,
				       struct d3dkmthandle handle)
{
	return handle.v ? xa_load(&proc->devices, handle.v) : NULL;
}

/* ---- other host objects --------------------------------------------------- */

struct dxg_object *dxg_object_new(struct dxg_process *proc,
				  enum dxg_obj_type type,
				  struct dxg_adapter *adapter,
				  struct d3dkmthandle device)
{
	struct dxg_object *obj = kzalloc(sizeof(*obj), GFP_KERNEL);

	if (!obj)
		return NULL;
	kref_init(&obj->ref);
	INIT_LIST_HEAD(&obj->parked);
	obj->proc = proc;
	obj->type = type;
	obj->adapter = adapter;
	obj->device = device;
	obj->slot = -1;
	return obj;
}

/* The last reference: the host no longer uses the pages or the slot. */
static void dxg_object_release(struct kref *ref)
{
	struct dxg_object *obj = container_of(ref, struct dxg_object, ref);

	/* A queue fence shares its queue's slot; the queue frees it. */
	if (obj->type != DXG_OBJ_QUEUE_FENCE)
		dxg_fence_slot_free(obj->proc, obj->slot);
	dxg_pages_put(obj->pages);
	kfree(obj);
}

void dxg_object_put(struct dxg_object *obj)
{
	if (obj)
		kref_put(&obj->ref, dxg_object_release);
}

/*
 * Enters a host handle; the table takes the caller's reference. -EBUSY:
 * the host gave a handle the process already has (a protocol error).
 */
int dxg_process_add_object(struct dxg_process *proc, struct dxg_object *obj,
			   struct d3dkmthandle handle)
{
	int ret = -ENOSPC;

	if (!handle.v)
		return -EPROTO;
	obj->handle = handle;
	mutex_lock(&proc->lock);
	if (proc->num_objects < DXG_MAX_OBJECTS) {
		ret = xa_insert(&proc->objects, handle.v, obj, GFP_KERNEL);
		if (!ret)
			proc->num_objects++;
	}
	mutex_unlock(&proc->lock);
	if (ret == -EBUSY)
		pr_warn_ratelimited("dxgkrnl: host returned handle %#x twice\n",
				    handle.v);
	return ret;
}

/* A referenced object of one of `types`, or NULL (the caller's -EBADF). */
struct dxg_object *dxg_process_object(struct dxg_process *proc,
				      struct d3dkmthandle handle, u32 types)
{
	struct dxg_object *obj;

	if (!handle.v)
		return NULL;
	mutex_lock(&proc->lock);
	obj = xa_load(&proc->objects, handle.v);
	if (obj && (DXG_OBJ_MASK(obj->type) & types))
		kref_get(&obj->ref);
	else
		obj = NULL;
	mutex_unlock(&proc->lock);
	return obj;
}

/* Removes an object of one of `types` from the table; the caller's ref. */
struct dxg_object *dxg_process_take_object(struct dxg_process *proc,
					   struct d3dkmthandle handle,
					   u32 types)
{
	struct dxg_object *obj;

	if (!handle.v)
		return NULL;
	mutex_lock(&proc->lock);
	obj = xa_load(&proc->objects, handle.v);
	if (obj && (DXG_OBJ_MASK(obj->type) & types) && !obj->marked) {
		xa_erase(&proc->objects, handle.v);
		proc->num_objects--;
		dxg_unmap_key(proc, obj);
	} else {
		obj = NULL;
	}
	mutex_unlock(&proc->lock);
	return obj;
}

/*
 * Checks that every handle names an object of one of `types` made on
 * `device` (any device when it is 0). Called with proc->lock held.
 */
int dxg_process_check_handles(struct dxg_process *proc,
			      struct d3dkmthandle device,
			      const struct d3dkmthandle *handles, u32 count,
			      u32 types)
{
	struct dxg_object *obj;
	u32 i;

	lockdep_assert_held(&proc->lock);
	for (i = 0; i < count; i++) {
		obj = handles[i].v ? xa_load(&proc->objects, handles[i].v) : NULL;
		if (!obj || !(DXG_OBJ_MASK(obj->type) & types) ||
		    (device.v && obj->device.v != device.v))
			return -EBADF;
	}
	return 0;
}

/*
 * The host destroyed a device or context and everything made on it: drop
 * the guest state of those objects. `parent` 0 means all of `device`'s.
 */
void dxg_process_drop_children(struct dxg_process *proc, u32 types,
			       struct d3dkmthandle device,
			       struct d3dkmthandle parent)
{
	struct dxg_object *obj;
	unsigned long index;

	mutex_lock(&proc->lock);
	xa_for_each(&proc->objects, index, obj) {
		if (!(DXG_OBJ_MASK(obj->type) & types) ||
		    obj->device.v != device.v ||
		    (parent.v && obj->parent.v != parent.v))
			continue;
		xa_erase(&proc->objects, index);
		proc->num_objects--;
		dxg_unmap_key(proc, obj);
		dxg_object_put(obj);
	}
	mutex_unlock(&proc->lock);
}

/*
 * Whether every fence of a CPU wait on `device` is still the process's: in
 * the table, on a device still in the table and, for a hardware queue's
 * fence, with its context still there. Every destroy takes these entries
 * out before its message goes, so a wait that the host ended because an
 * object it names was destroyed (§2.6.8) finds one missing when it wakes.
 */
bool dxg_process_fences_live(struct dxg_process *proc,
			     struct d3dkmthandle device,
			     const struct d3dkmthandle *handles, u32 count)
{
	struct dxg_object *obj;
	bool live;
	u32 i;

	mutex_lock(&proc->lock);
	live = !!xa_load(&proc->devices, device.v);
	for (i = 0; live && i < count; i++) {
		obj = xa_load(&proc->objects, handles[i].v);
		live = obj && (DXG_OBJ_MASK(obj->type) & DXG_OBJS_FENCE) &&
		       obj->device.v == device.v &&
		       (!obj->parent.v || xa_load(&proc->objects, obj->parent.v));
	}
	mutex_unlock(&proc->lock);
	return live;
}
