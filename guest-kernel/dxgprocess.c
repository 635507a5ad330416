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
	if (!proc) {
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
	bool last;

	mutex_lock(&dxg->proc_lock);
	last = --proc->nfiles == 0;
	if (last)
		list_del(&proc->node);
	mutex_unlock(&dxg->proc_lock);
	if (!last)
		return;

	/* The host frees the process's devices and everything below them. */
	mutex_lock(&proc->lock);
	dxgvmb_release_process(proc);
	mutex_unlock(&proc->lock);

	/* The tables hold pointers to adapters owned by dxg: nothing to free. */
	xa_destroy(&proc->adapters);
	xa_destroy(&proc->devices);
	mutex_destroy(&proc->lock);
	put_pid(proc->tgid);
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
