// SPDX-License-Identifier: GPL-2.0
/*
 * dxgkrnl for dxvmm: the /dev/dxg ioctls (docs/protocol.md §6).
 *
 * dxg_ioctl() checks the command word against the table (type, number,
 * direction and size must be exactly the header's), copies the argument
 * struct in, calls the handler on the kernel copy and, when the handler
 * returns a non-negative value, copies the struct back. Handlers copy any
 * further user memory themselves. Adding an ioctl is one handler and one
 * table entry.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/eventfd.h>
#include <linux/fs.h>
#include <linux/mm.h>
#include <linux/sizes.h>
#include <linux/string.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/uaccess.h>

#include "dxgkrnl.h"
#include "uapi/misc/dxvmm_gpu.h"

/* Room for the largest argument struct (d3dkmt_submitcommand, 384). */
#define DXG_IOCTL_ARG_MAX	512

typedef long (*dxg_ioctl_fn)(struct dxg_process *proc, struct file *file,
			     void *args);
typedef void (*dxg_undo_fn)(struct dxg_process *proc, void *args);

struct dxg_ioctl {
	unsigned int	cmd;
	dxg_ioctl_fn	fn;
	dxg_undo_fn	undo;	/* the result could not reach the caller */
	const char	*name;
};

static struct dxg_adapter *dxg_find_adapter(struct dxg_vdev *dxg,
					    struct winluid luid)
{
	unsigned int i;

	for (i = 0; i < dxg->num_adapters; i++)
		if (dxg->adapters[i].luid.a == luid.a &&
		    dxg->adapters[i].luid.b == luid.b)
			return &dxg->adapters[i];
	return NULL;
}

static long dxgk_open_adapter_from_luid(struct dxg_process *proc, struct file *file,
			void *p)
{
	struct d3dkmt_openadapterfromluid *args = p;
	struct dxg_adapter *adapter;

	adapter = dxg_find_adapter(proc->dxg, args->adapter_luid);
	if (!adapter)
		return -ENOENT;
	return dxg_process_add_adapter(proc, adapter, &args->adapter_handle);
}

static long dxgk_close_adapter(struct dxg_process *proc, struct file *file,
			void *p)
{
	struct d3dkmt_closeadapter *args = p;

	return dxg_process_remove_adapter(proc, args->adapter_handle);
}

/*
 * ENUMADAPTERS2 and 3: a new handle of each adapter for the caller, who
 * closes each one. A null array asks for the count only.
 */
static long dxg_enum_adapters(struct dxg_process *proc, u32 *count,
			      u64 uarray)
{
	struct dxg_vdev *dxg = proc->dxg;
	struct d3dkmt_adapterinfo *info;
	unsigned int i, n = dxg->num_adapters;
	long ret = 0;

	if (!uarray) {
		*count = n;
		return 0;
	}
	if (*count > D3DKMT_ADAPTERS_MAX)
		return -EINVAL;
	if (*count < n)
		return -EOVERFLOW;
	if (!n) {
		*count = 0;
		return 0;
	}
	info = kcalloc(n, sizeof(*info), GFP_KERNEL);
	if (!info)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		ret = dxg_process_add_adapter(proc, &dxg->adapters[i],
					      &info[i].adapter_handle);
		if (ret)
			break;
		info[i].adapter_luid = dxg->adapters[i].luid;
	}
	if (!ret && copy_to_user(u64_to_user_ptr(uarray), info,
				 n * sizeof(*info)))
		ret = -EFAULT;
	if (ret) {
		/* The caller never saw these handles: take them back. */
		while (i--)
			dxg_process_remove_adapter(proc, info[i].adapter_handle);
	} else {
		*count = n;
	}
	kfree(info);
	return ret;
}

static long dxgk_enum_adapters2(struct dxg_process *proc, struct file *file,
			void *p)
{
	struct d3dkmt_enumadapters2 *args = p;

	return dxg_enum_adapters(proc, &args->num_adapters, args->adapters);
}

/*
 * The filter is not applied: every dxvmm adapter is compute-only, and a
 * caller that leaves include_compute_only clear would otherwise see none.
 */
static long dxgk_enum_adapters3(struct dxg_process *proc, struct file *file,
			void *p)
{
	struct d3dkmt_enumadapters3 *args = p;

	return dxg_enum_adapters(proc, &args->adapter_count, args->adapters);
}

static long dxgk_query_adapter_info(struct dxg_process *proc, struct file *file,
			void *p)
{
	struct d3dkmt_queryadapterinfo *args = p;
	struct dxg_adapter *adapter;
	struct d3dkmthandle host;
	u32 size = args->private_data_size;
	int ret;

	adapter = dxg_process_adapter(proc, args->adapter);
	if (!adapter)
		return -EBADF;
	/* Any type goes to the host, which decides; the size is ours to cap. */
	if (!size || size > DXG_QAI_MAX_PRIVATE_DATA ||
	    size + sizeof(struct dxgkvmb_command_queryadapterinfo) >
	    proc->dxg->max_payload)
		return -EINVAL;
	if (!args->private_data)
		return -EINVAL;
	ret = dxg_process_host(proc, &host);
	if (ret)
		return ret;
	return dxgvmb_query_adapter_info(proc, adapter, args->type,
					 u64_to_user_ptr(args->private_data),
					 size);
}

static long dxgk_query_video_memory_info(struct dxg_process *proc, struct file *file,
			void *p)
{
	struct d3dkmt_queryvideomemoryinfo *args = p;
	struct dxg_adapter *adapter;
	struct d3dkmthandle host;
	int ret;

	/* Only the calling process can be asked about. */
	if (args->process)
		return -EINVAL;
	if (args->memory_segment_group != _D3DKMT_MEMORY_SEGMENT_GROUP_LOCAL &&
	    args->memory_segment_group != _D3DKMT_MEMORY_SEGMENT_GROUP_NON_LOCAL)
		return -EINVAL;
	adapter = dxg_process_adapter(proc, args->adapter);
	if (!adapter)
		return -EBADF;
	ret = dxg_process_host(proc, &host);
	if (ret)
		return ret;
	return dxgvmb_query_video_memory_info(proc, adapter, args);
}

static long dxgk_create_device(struct dxg_process *proc, struct file *file,
			void *p)
{
	struct d3dkmt_createdevice *args = p;
	struct dxg_adapter *adapter;
	struct d3dkmthandle host, device;
	int ret;

	adapter = dxg_process_adapter(proc, args->adapter);
	if (!adapter)
		return -EBADF;
	ret = dxg_process_host(proc, &host);
	if (ret)
		return ret;
	ret = dxgvmb_create_device(proc, adapter, args->flags, &device);
	if (ret)
		return ret;
	ret = dxg_process_add_device(proc, adapter, device);
	if (ret) {
		/* Table full, or the host reused a live handle. */
		if (ret == -EBUSY) {
			pr_warn_ratelimited("host returned device handle %#x twice\n",
					     device.v);
			return -EPROTO;
		}
		dxgvmb_destroy_device(proc, adapter, device);
		return ret;
	}
	args->device = device;
	return 0;
}

/* The caller never learnt the handle: destroy the device again. */
static void dxgk_create_device_undo(struct dxg_process *proc, void *p)
{
	struct d3dkmt_createdevice *args = p;
	struct dxg_adapter *adapter;

	adapter = dxg_process_take_device(proc, args->device);
	if (adapter)
		dxgvmb_destroy_device(proc, adapter, args->device);
}

static long dxgk_destroy_device(struct dxg_process *proc, struct file *file,
			void *p)
{
	struct d3dkmt_destroydevice *args = p;
	struct dxg_adapter *adapter;

	int ret;

	adapter = dxg_process_take_device(proc, args->device);
	if (!adapter)
		return -EBADF;
	ret = dxgvmb_destroy_device(proc, adapter, args->device);
	/*
	 * The host destroyed everything made on the device: let go of its
	 * pages and slots. A host that did not answer may still use them;
	 * they stay until the process ends.
	 */
	if (ret >= 0 || ret == -ENODEV)
		dxg_process_drop_children(proc, ~0u, args->device,
					  (struct d3dkmthandle){});
	return ret;
}

/* ---- helpers of the compute profile ------------------------------------------ */

/* A user array of `count` elements; the caller capped count. */
static void *dxg_copy_array(u64 uptr, u32 count, size_t size)
{
	if (!uptr)
		return ERR_PTR(-EINVAL);
	return vmemdup_user(u64_to_user_ptr(uptr), (size_t)count * size);
}

/* Sends a request with an NTSTATUS reply; returns it as an errno or >= 0. */
static int dxg_send_status(struct dxg_process *proc, struct dxg_adapter *adapter,
			   struct dxg_req *req, unsigned int flags)
{
	int ret = dxgvm_send(proc, adapter, req, flags);

	if (!ret)
		ret = dxgvm_errno(((struct ntstatus *)dxgvm_req_reply(req))->v);
	dxgvm_req_put(req);
	return ret;
}

/*
 * A submission: asynchronous unless the module parameter says otherwise,
 * as WSL's dxgkrnl sends it when the host allows (§2.2); its status then
 * reaches the process at its next call.
 */
static int dxg_send_submission(struct dxg_process *proc,
			       struct dxg_adapter *adapter,
			       struct dxg_req *req, bool async)
{
	if (!async)
		return dxg_send_status(proc, adapter, req, DXGVM_WAIT_KILLABLE);
	return dxgvm_req_send_async(proc->dxg, req, &adapter->luid, proc->async);
}

static int dxg_check_handles(struct dxg_process *proc,
			     struct d3dkmthandle device,
			     const struct d3dkmthandle *handles, u32 count,
			     u32 types)
{
	int ret;

	mutex_lock(&proc->lock);
	ret = dxg_process_check_handles(proc, device, handles, count, types);
	mutex_unlock(&proc->lock);
	return ret;
}

/* An object of one type made on `device` (any device when 0). */
static struct dxg_object *dxg_lookup(struct dxg_process *proc,
				     struct d3dkmthandle handle, u32 types,
				     struct d3dkmthandle device)
{
	struct dxg_object *obj = dxg_process_object(proc, handle, types);

	if (obj && device.v && obj->device.v != device.v) {
		dxg_object_put(obj);
		return NULL;
	}
	return obj;
}

/*
 * Objects whose destroy the host did not answer (timeout): the host may
 * still use their pages, so they are kept until the process ends.
 */
static void dxg_object_retire(struct dxg_process *proc, struct dxg_object *obj,
			      int ret)
{
	if (ret == -ETIMEDOUT || ret == -EINTR) {
		mutex_lock(&proc->lock);
		list_add(&obj->parked, &proc->parked);
		mutex_unlock(&proc->lock);
		return;
	}
	dxg_object_put(obj);
}

/* ---- allocations ------------------------------------------------------------------ */

/* Takes back what CREATEALLOCATION made when the ioctl cannot complete. */
static void dxg_allocations_abort(struct dxg_process *proc,
				  struct dxg_adapter *adapter,
				  struct d3dkmthandle device,
				  struct dxg_object **objs, u32 count,
				  bool on_host)
{
	struct d3dkmthandle *handles = NULL;
	int ret = 0;
	u32 i;

	if (on_host) {
		handles = kvcalloc(count, sizeof(*handles), GFP_KERNEL);
		if (handles) {
			for (i = 0; i < count; i++)
				handles[i] = objs[i]->handle;
			ret = dxgvmb_destroy_allocations(proc, adapter, device,
							 handles, count);
		} else {
			ret = -ETIMEDOUT;	/* keep the pages: see retire */
		}
		kvfree(handles);
	}
	for (i = 0; i < count; i++)
		if (objs[i])
			dxg_object_retire(proc, objs[i], ret);
}

/* Checks one allocation's description (§2.6.1) and prepares its pages. */
static int dxg_allocation_prepare(struct dxg_object *obj,
				  const struct d3dddi_allocationinfo2 *info)
{
	struct dxgv_allocation_desc desc;
	unsigned long npages;

	if (info->priv_drv_data_size != sizeof(desc))
		return -EINVAL;
	if (copy_from_user(&desc, u64_to_user_ptr(info->priv_drv_data),
			   sizeof(desc)))
		return -EFAULT;
	if (!desc.size || desc.size % 4 || desc.size > U64_MAX - SZ_4K ||
	    (desc.alignment & (desc.alignment - 1)) ||
	    desc.alignment > DXGV_MAX_ALLOCATION_ALIGNMENT ||
	    (desc.flags & ~DXGV_ALLOC_CPU_VISIBLE))
		return -EINVAL;
	obj->size = round_up(desc.size, SZ_4K);
	obj->cpu_visible = desc.flags & DXGV_ALLOC_CPU_VISIBLE;
	obj->sysmem = info->sysmem;
	if (!obj->cpu_visible)
		return info->sysmem ? -EINVAL : 0;
	/* The guest cannot back more than its memory; don't try. */
	if (obj->size / PAGE_SIZE > totalram_pages() / 2)
		return -ENOMEM;
	npages = DIV_ROUND_UP(obj->size, PAGE_SIZE);
	if (info->sysmem) {
		/* Exactly allocation_size bytes of the caller's, page-aligned. */
		if (obj->size != (u64)npages * PAGE_SIZE)
			return -EINVAL;
		obj->pages = dxg_pages_pin(info->sysmem, npages);
		if (IS_ERR(obj->pages)) {
			int ret = PTR_ERR(obj->pages);

			obj->pages = NULL;
			return ret;
		}
		return 0;
	}
	obj->pages = dxg_pages_alloc(npages);
	return obj->pages ? 0 : -ENOMEM;
}

/*
 * CREATEALLOCATION (§2.6.1-2.6.2): the guest pages are pinned or allocated
 * first, so that a bad pointer fails before the host makes anything; then
 * the message, then every page with SETEXISTINGSYSMEMPAGES.
 */
static long dxgk_create_allocation(struct dxg_process *proc, struct file *file,
				   void *p)
{
	struct d3dkmt_createallocation *args = p;
	struct dxgkvmb_command_createallocation_allocinfo *ai;
	struct dxgkvmb_command_createallocation_return *r;
	struct dxgkvmb_command_allocinfo_return *ri;
	struct dxgkvmb_command_createallocation *cmd;
	struct d3dddi_allocationinfo2 *info;
	struct dxgv_allocation_desc *descs;
	struct dxg_object **objs = NULL;
	struct dxg_adapter *adapter;
	struct d3dkmt_createallocationflags bad = {};
	u32 n = args->alloc_count, i, added = 0;
	struct dxg_req *req = NULL;
	bool on_host = false;
	long ret;

	adapter = dxg_process_device(proc, args->device);
	if (!adapter)
		return -EBADF;
	/* No resources, runtime data, sharing or standard allocations. */
	bad.create_resource = 1;
	bad.create_shared = 1;
	bad.nt_security_sharing = 1;
	bad.cross_adapter = 1;
	bad.open_cross_adapter = 1;
	bad.standard_allocation = 1;
	bad.existing_section = 1;
	if (!n || n > D3DKMT_CREATEALLOCATION_MAX || args->resource.v ||
	    args->private_runtime_data_size || args->priv_drv_data_size ||
	    (args->flags.value & bad.value))
		return -EINVAL;
	info = dxg_copy_array(args->allocation_info, n, sizeof(*info));
	if (IS_ERR(info))
		return PTR_ERR(info);
	objs = kvcalloc(n, sizeof(*objs), GFP_KERNEL);
	if (!objs) {
		ret = -ENOMEM;
		goto out;
	}
	for (i = 0; i < n; i++) {
		objs[i] = dxg_object_new(proc, DXG_OBJ_ALLOCATION, adapter,
					 args->device);
		if (!objs[i]) {
			ret = -ENOMEM;
			goto fail;
		}
		ret = dxg_allocation_prepare(objs[i], &info[i]);
		if (ret)
			goto fail;
	}

	req = dxgvm_req_alloc(sizeof(*cmd) + n * (sizeof(*ai) + sizeof(*descs)),
			      sizeof(*r) + n * (sizeof(*ri) + sizeof(*descs)));
	if (!req) {
		ret = -ENOMEM;
		goto fail;
	}
	cmd = dxgvm_req_cmd(req);
	dxgvm_vgpu_header(&cmd->hdr, proc, DXGK_VMBCOMMAND_CREATEALLOCATION);
	cmd->device = args->device;
	cmd->alloc_count = n;
	cmd->flags = args->flags;
	cmd->private_runtime_resource_handle =
		args->private_runtime_resource_handle;
	ai = (void *)(cmd + 1);
	descs = (void *)(ai + n);
	for (i = 0; i < n; i++) {
		ai[i].flags = info[i].flags.value;
		ai[i].priv_drv_data_size = sizeof(*descs);
		ai[i].vidpn_source_id = info[i].vidpn_source_id;
		/* Read once more: the bytes the host sees are the checked ones. */
		descs[i].size = objs[i]->size;
	}
	for (i = 0; i < n; i++) {
		if (copy_from_user(&descs[i], u64_to_user_ptr(info[i].priv_drv_data),
				   sizeof(*descs))) {
			ret = -EFAULT;
			goto fail;
		}
		if (round_up(descs[i].size, SZ_4K) != objs[i]->size ||
		    !!(descs[i].flags & DXGV_ALLOC_CPU_VISIBLE) !=
		    objs[i]->cpu_visible) {
			ret = -EINVAL;	/* changed under us */
			goto fail;
		}
	}
	ret = dxgvm_send(proc, adapter, req, DXGVM_WAIT_KILLABLE);
	if (ret)
		goto fail;
	r = dxgvm_req_reply(req);
	ri = (void *)(r + 1);
	for (i = 0; i < n; i++) {
		objs[i]->handle = ri[i].allocation;
		if (!ri[i].allocation.v)
			ret = -EPROTO;
		else if (ri[i].allocation_size != objs[i]->size)
			ret = -EPROTO;
	}
	on_host = true;
	if (ret) {
		pr_warn_ratelimited("CREATEALLOCATION reply breaks §2.6.1\n");
		goto fail;
	}
	for (i = 0; i < n; i++) {
		if (!objs[i]->pages)
			continue;
		ret = dxgvmb_set_sysmem_pages(proc, objs[i]);
		if (ret < 0)
			goto fail;
	}
	for (i = 0; i < n; i++) {
		kref_get(&objs[i]->ref);
		ret = dxg_process_add_object(proc, objs[i], objs[i]->handle);
		if (ret) {
			dxg_object_put(objs[i]);
			goto fail_added;
		}
		added++;
		info[i].allocation = objs[i]->handle;
	}
	if (copy_to_user(u64_to_user_ptr(args->allocation_info), info,
			 n * sizeof(*info))) {
		ret = -EFAULT;
		goto fail_added;
	}
	for (i = 0; i < n; i++)
		dxg_object_put(objs[i]);	/* the table keeps its own */
	ret = 0;
	goto out;

fail_added:
	for (i = 0; i < added; i++)
		dxg_object_put(dxg_process_take_object(proc, objs[i]->handle,
			       DXG_OBJ_MASK(DXG_OBJ_ALLOCATION)));
fail:
	dxg_allocations_abort(proc, adapter, args->device, objs, n, on_host);
out:
	dxgvm_req_put(req);
	kvfree(objs);
	kvfree(info);
	return ret;
}

/*
 * DESTROYALLOCATION: all handles are checked and taken out of the table
 * first (all or none), then the host lets go, then the pages go.
 */
static long dxgk_destroy_allocation2(struct dxg_process *proc,
				     struct file *file, void *p)
{
	struct d3dkmt_destroyallocation2 *args = p;
	struct dxg_adapter *adapter;
	struct dxg_object **objs;
	struct d3dkmthandle *handles;
	u32 n = args->alloc_count, i;
	long ret = 0;

	adapter = dxg_process_device(proc, args->device);
	if (!adapter)
		return -EBADF;
	if (!n || n > D3DKMT_MAKERESIDENT_ALLOC_MAX || args->resource.v)
		return -EINVAL;
	handles = dxg_copy_array(args->allocations, n, sizeof(*handles));
	if (IS_ERR(handles))
		return PTR_ERR(handles);
	objs = kvcalloc(n, sizeof(*objs), GFP_KERNEL);
	if (!objs) {
		kvfree(handles);
		return -ENOMEM;
	}
	mutex_lock(&proc->lock);
	for (i = 0; i < n; i++) {
		struct dxg_object *obj = handles[i].v ?
			xa_load(&proc->objects, handles[i].v) : NULL;

		if (!obj || obj->type != DXG_OBJ_ALLOCATION ||
		    obj->device.v != args->device.v || obj->marked) {
			ret = -EBADF;	/* unknown, wrong, or named twice */
			break;
		}
		obj->marked = true;
		objs[i] = obj;
	}
	for (i = 0; i < n && objs[i]; i++) {
		objs[i]->marked = false;
		if (ret)
			continue;
		xa_erase(&proc->objects, handles[i].v);
		proc->num_objects--;
		dxg_unmap_key(proc, objs[i]);
	}
	mutex_unlock(&proc->lock);
	if (!ret) {
		ret = dxgvmb_destroy_allocations(proc, adapter, args->device,
						 handles, n);
		for (i = 0; i < n; i++)
			dxg_object_retire(proc, objs[i], ret);
	}
	kvfree(objs);
	kvfree(handles);
	return ret;
}

/* A lookup of the allocations of a list, all on `device`. */
static struct d3dkmthandle *dxg_allocation_list(struct dxg_process *proc,
						struct d3dkmthandle device,
						u64 uptr, u32 n)
{
	struct d3dkmthandle *handles;
	int ret;

	if (!n || n > D3DKMT_MAKERESIDENT_ALLOC_MAX)
		return ERR_PTR(-EINVAL);
	handles = dxg_copy_array(uptr, n, sizeof(*handles));
	if (IS_ERR(handles))
		return handles;
	ret = dxg_check_handles(proc, device, handles, n,
				DXG_OBJ_MASK(DXG_OBJ_ALLOCATION));
	if (ret) {
		kvfree(handles);
		return ERR_PTR(ret);
	}
	return handles;
}

static long dxgk_make_resident(struct dxg_process *proc, struct file *file,
			       void *p)
{
	struct d3dddi_makeresident *args = p;
	struct dxgkvmb_command_makeresident *cmd;
	struct dxgkvmb_command_makeresident_return *r;
	struct dxg_object *pq = NULL, *first;
	struct d3dkmthandle *handles, device;
	struct dxg_adapter *adapter;
	struct dxg_req *req;
	u32 n = args->alloc_count;
	long ret;

	if (!n || n > D3DKMT_MAKERESIDENT_ALLOC_MAX || !args->allocation_list)
		return -EINVAL;
	/* The device: the paging queue's, or else the first allocation's. */
	if (args->paging_queue.v) {
		pq = dxg_lookup(proc, args->paging_queue,
				DXG_OBJ_MASK(DXG_OBJ_PAGINGQUEUE),
				(struct d3dkmthandle){});
		if (!pq)
			return -EBADF;
		device = pq->device;
		adapter = pq->adapter;
		dxg_object_put(pq);
	} else {
		struct d3dkmthandle h;

		if (get_user(h.v, (u32 __user *)u64_to_user_ptr(args->allocation_list)))
			return -EFAULT;
		first = dxg_lookup(proc, h, DXG_OBJ_MASK(DXG_OBJ_ALLOCATION),
				   (struct d3dkmthandle){});
		if (!first)
			return -EBADF;
		device = first->device;
		adapter = first->adapter;
		dxg_object_put(first);
	}
	handles = dxg_allocation_list(proc, device, args->allocation_list, n);
	if (IS_ERR(handles))
		return PTR_ERR(handles);
	req = dxgvm_req_alloc(sizeof(*cmd) + n * sizeof(*handles), sizeof(*r));
	if (!req) {
		kvfree(handles);
		return -ENOMEM;
	}
	cmd = dxgvm_req_cmd(req);
	dxgvm_vgpu_header(&cmd->hdr, proc, DXGK_VMBCOMMAND_MAKERESIDENT);
	cmd->device = device;
	cmd->paging_queue = args->paging_queue;
	cmd->flags = args->flags;
	cmd->alloc_count = n;
	memcpy(cmd + 1, handles, n * sizeof(*handles));
	kvfree(handles);
	ret = dxgvm_send(proc, adapter, req, DXGVM_WAIT_KILLABLE);
	if (!ret) {
		r = dxgvm_req_reply(req);
		ret = dxgvm_errno(r->status.v);
		args->paging_fence_value = r->paging_fence_value;
		args->num_bytes_to_trim = r->num_bytes_to_trim;
	}
	dxgvm_req_put(req);
	return ret;
}

static long dxgk_evict(struct dxg_process *proc, struct file *file, void *p)
{
	struct d3dkmt_evict *args = p;
	struct dxgkvmb_command_evict *cmd;
	struct dxgkvmb_command_evict_return *r;
	struct d3dkmthandle *handles;
	struct dxg_adapter *adapter;
	u32 n = args->alloc_count;
	struct dxg_req *req;
	long ret;

	adapter = dxg_process_device(proc, args->device);
	if (!adapter)
		return -EBADF;
	handles = dxg_allocation_list(proc, args->device, args->allocations, n);
	if (IS_ERR(handles))
		return PTR_ERR(handles);
	req = dxgvm_req_alloc(sizeof(*cmd) + n * sizeof(*handles), sizeof(*r));
	if (!req) {
		kvfree(handles);
		return -ENOMEM;
	}
	cmd = dxgvm_req_cmd(req);
	dxgvm_vgpu_header(&cmd->hdr, proc, DXGK_VMBCOMMAND_EVICT);
	cmd->device = args->device;
	cmd->flags = args->flags;
	cmd->alloc_count = n;
	memcpy(cmd + 1, handles, n * sizeof(*handles));
	kvfree(handles);
	ret = dxgvm_send(proc, adapter, req, DXGVM_WAIT_KILLABLE);
	if (!ret) {
		r = dxgvm_req_reply(req);
		args->num_bytes_to_trim = r->num_bytes_to_trim;
	}
	dxgvm_req_put(req);
	return ret;
}

static long dxgk_query_allocation_residency(struct dxg_process *proc,
					    struct file *file, void *p)
{
	struct d3dkmt_queryallocationresidency *args = p;
	struct dxgkvmb_command_queryallocationresidency *cmd;
	struct d3dkmthandle *handles;
	struct dxg_adapter *adapter;
	u32 n = args->allocation_count;
	struct ntstatus *status;
	struct dxg_req *req;
	long ret;

	adapter = dxg_process_device(proc, args->device);
	if (!adapter)
		return -EBADF;
	if (args->resource.v || !args->residency_status)
		return -EINVAL;
	handles = dxg_allocation_list(proc, args->device, args->allocations, n);
	if (IS_ERR(handles))
		return PTR_ERR(handles);
	req = dxgvm_req_alloc(sizeof(*cmd) + n * sizeof(*handles),
			      sizeof(*status) + n * sizeof(u32));
	if (!req) {
		kvfree(handles);
		return -ENOMEM;
	}
	cmd = dxgvm_req_cmd(req);
	dxgvm_vgpu_header(&cmd->hdr, proc,
			  DXGK_VMBCOMMAND_QUERYALLOCATIONRESIDENCY);
	cmd->args = *args;
	memcpy(cmd + 1, handles, n * sizeof(*handles));
	kvfree(handles);
	ret = dxgvm_send(proc, adapter, req, DXGVM_WAIT_KILLABLE);
	if (!ret) {
		status = dxgvm_req_reply(req);
		ret = dxgvm_errno(status->v);
		if (ret >= 0 &&
		    copy_to_user(u64_to_user_ptr(args->residency_status),
				 status + 1, n * sizeof(u32)))
			ret = -EFAULT;
	}
	dxgvm_req_put(req);
	return ret;
}

/* SETALLOCATIONPRIORITY and GETALLOCATIONPRIORITY share their layout. */
static long dxg_allocation_priority(struct dxg_process *proc,
				    struct d3dkmt_setallocationpriority *args,
				    bool set)
{
	struct dxgkvmb_command_setallocationpriority *cmd;
	struct d3dkmthandle *handles;
	struct dxg_adapter *adapter;
	u32 n = args->allocation_count;
	struct ntstatus *status;
	struct dxg_req *req;
	long ret;

	BUILD_BUG_ON(sizeof(struct dxgkvmb_command_setallocationpriority) !=
		     sizeof(struct dxgkvmb_command_getallocationpriority));
	adapter = dxg_process_device(proc, args->device);
	if (!adapter)
		return -EBADF;
	if (args->resource.v || !args->priorities)
		return -EINVAL;
	handles = dxg_allocation_list(proc, args->device,
				      args->allocation_list, n);
	if (IS_ERR(handles))
		return PTR_ERR(handles);
	req = dxgvm_req_alloc(sizeof(*cmd) + n * sizeof(*handles) +
			      (set ? n * sizeof(u32) : 0),
			      sizeof(*status) + (set ? 0 : n * sizeof(u32)));
	if (!req) {
		kvfree(handles);
		return -ENOMEM;
	}
	cmd = dxgvm_req_cmd(req);
	dxgvm_vgpu_header(&cmd->hdr, proc,
			  set ? DXGK_VMBCOMMAND_SETALLOCATIONPRIORITY :
			  DXGK_VMBCOMMAND_GETALLOCATIONPRIORITY);
	cmd->device = args->device;
	cmd->allocation_count = n;
	memcpy(cmd + 1, handles, n * sizeof(*handles));
	kvfree(handles);
	if (set && copy_from_user((u8 *)(cmd + 1) + n * sizeof(*handles),
				  u64_to_user_ptr(args->priorities),
				  n * sizeof(u32))) {
		dxgvm_req_put(req);
		return -EFAULT;
	}
	ret = dxgvm_send(proc, adapter, req, DXGVM_WAIT_KILLABLE);
	if (!ret) {
		status = dxgvm_req_reply(req);
		ret = dxgvm_errno(status->v);
		if (!set && ret >= 0 &&
		    copy_to_user(u64_to_user_ptr(args->priorities), status + 1,
				 n * sizeof(u32)))
			ret = -EFAULT;
	}
	dxgvm_req_put(req);
	return ret;
}

static long dxgk_set_allocation_priority(struct dxg_process *proc,
					 struct file *file, void *p)
{
	return dxg_allocation_priority(proc, p, true);
}

static long dxgk_get_allocation_priority(struct dxg_process *proc,
					 struct file *file, void *p)
{
	BUILD_BUG_ON(sizeof(struct d3dkmt_getallocationpriority) !=
		     sizeof(struct d3dkmt_setallocationpriority));
	return dxg_allocation_priority(proc, p, false);
}

/*
 * LOCK2 (§2.6.3): the host makes the pages current; the caller gets their
 * address in its own address space, the same one every time.
 */
static long dxgk_lock2(struct dxg_process *proc, struct file *file, void *p)
{
	struct d3dkmt_lock2 *args = p;
	struct dxgkvmb_command_lock2 cmd = {};
	struct dxgkvmb_command_lock2_return r;
	struct dxg_object *obj;
	long ret;

	if (args->flags.value)
		return -EINVAL;
	obj = dxg_lookup(proc, args->allocation,
			 DXG_OBJ_MASK(DXG_OBJ_ALLOCATION), args->device);
	if (!obj)
		return -EBADF;
	dxgvm_vgpu_header(&cmd.hdr, proc, DXGK_VMBCOMMAND_LOCK2);
	cmd.args = *args;
	cmd.args.data = 0;
	ret = dxgvm_send_reply(proc, obj->adapter, &cmd, sizeof(cmd), &r,
			       sizeof(r), DXGVM_WAIT_KILLABLE);
	if (!ret)
		ret = dxgvm_errno(r.status.v);
	if (ret < 0)
		goto out;
	if (!obj->pages) {
		ret = -EINVAL;		/* GPU-only: the host should have said so */
		goto out;
	}
	if (obj->sysmem) {
		args->data = obj->sysmem;
		goto out;
	}
	mutex_lock(&proc->lock);
	/* Not if a destroy took it meanwhile: its map key is gone for good. */
	if (xa_load(&proc->objects, obj->handle.v) != obj)
		ret = -EBADF;
	else
		ret = dxg_map_allocation(file, obj);
	if (!ret)
		args->data = obj->uaddr;
	mutex_unlock(&proc->lock);
out:
	dxg_object_put(obj);
	return ret;
}

static long dxgk_unlock2(struct dxg_process *proc, struct file *file, void *p)
{
	struct d3dkmt_unlock2 *args = p;
	struct dxgkvmb_command_unlock2 cmd = {};
	struct dxg_object *obj;
	long ret;

	obj = dxg_lookup(proc, args->allocation,
			 DXG_OBJ_MASK(DXG_OBJ_ALLOCATION), args->device);
	if (!obj)
		return -EBADF;
	dxgvm_vgpu_header(&cmd.hdr, proc, DXGK_VMBCOMMAND_UNLOCK2);
	cmd.args = *args;
	ret = dxgvm_send_status(proc, obj->adapter, &cmd, sizeof(cmd),
				DXGVM_WAIT_KILLABLE);
	dxg_object_put(obj);
	return ret;
}

/* ---- GPU virtual addresses ------------------------------------------------------ */

/*
 * RESERVE and FREE name an adapter (the process's VA space there): one of
 * the caller's adapter handles, or one of its devices. The host gets the
 * adapter's own handle.
 */
static struct dxg_adapter *dxg_va_adapter(struct dxg_process *proc,
					  struct d3dkmthandle handle)
{
	struct dxg_adapter *adapter = dxg_process_adapter(proc, handle);

	return adapter ? adapter : dxg_process_device(proc, handle);
}

static long dxgk_reserve_gpu_va(struct dxg_process *proc, struct file *file,
				void *p)
{
	struct d3dddi_reservegpuvirtualaddress *args = p;
	struct dxgkvmb_command_reservegpuvirtualaddress cmd = {};
	struct dxgkvmb_command_reservegpuvirtualaddress_return r;
	struct dxg_adapter *adapter;
	struct d3dkmthandle host;
	long ret;

	adapter = dxg_va_adapter(proc, args->adapter);
	if (!adapter)
		return -EBADF;
	ret = dxg_process_host(proc, &host);
	if (ret)
		return ret;
	dxgvm_vgpu_header(&cmd.hdr, proc, DXGK_VMBCOMMAND_RESERVEGPUVIRTUALADDRESS);
	cmd.args = *args;
	cmd.args.adapter = adapter->host_handle;
	ret = dxgvm_send_reply(proc, adapter, &cmd, sizeof(cmd), &r, sizeof(r),
			       DXGVM_WAIT_KILLABLE);
	if (ret)
		return ret;
	/* The host answers a failure with address 0 (as Hyper-V does). */
	if (!r.virtual_address)
		return -ENOMEM;
	args->virtual_address = r.virtual_address;
	args->paging_fence_value = r.paging_fence_value;
	return 0;
}

/*
 * MAPGPUVIRTUALADDRESS: the device is the allocation's; a paging queue is
 * optional (the host does not use it), but one given must be the caller's
 * on the same device.
 */
static long dxgk_map_gpu_va(struct dxg_process *proc, struct file *file,
			    void *p)
{
	struct d3dddi_mapgpuvirtualaddress *args = p;
	struct dxgkvmb_command_mapgpuvirtualaddress cmd = {};
	struct dxgkvmb_command_mapgpuvirtualaddress_return r;
	struct dxg_object *obj, *pq;
	u64 pages;
	long ret;

	obj = dxg_lookup(proc, args->allocation,
			 DXG_OBJ_MASK(DXG_OBJ_ALLOCATION), (struct d3dkmthandle){});
	if (!obj)
		return -EBADF;
	if (args->paging_queue.v) {
		pq = dxg_lookup(proc, args->paging_queue,
				DXG_OBJ_MASK(DXG_OBJ_PAGINGQUEUE), obj->device);
		if (!pq) {
			ret = -EBADF;
			goto out;
		}
		dxg_object_put(pq);
	}
	pages = obj->size / SZ_4K;
	if (!args->size_in_pages || args->size_in_pages > pages ||
	    args->offset_in_pages > pages - args->size_in_pages) {
		ret = -EINVAL;
		goto out;
	}
	dxgvm_vgpu_header(&cmd.hdr, proc, DXGK_VMBCOMMAND_MAPGPUVIRTUALADDRESS);
	cmd.args = *args;
	cmd.device = obj->device;
	ret = dxgvm_send_reply(proc, obj->adapter, &cmd, sizeof(cmd), &r,
			       sizeof(r), DXGVM_WAIT_KILLABLE);
	if (ret)
		goto out;
	ret = dxgvm_errno(r.status.v);
	if (ret >= 0) {
		args->virtual_address = r.virtual_address;
		args->paging_fence_value = r.paging_fence_value;
	}
out:
	dxg_object_put(obj);
	return ret;
}

static long dxgk_free_gpu_va(struct dxg_process *proc, struct file *file,
			     void *p)
{
	struct d3dkmt_freegpuvirtualaddress *args = p;
	struct dxgkvmb_command_freegpuvirtualaddress cmd = {};
	struct dxg_adapter *adapter;
	struct d3dkmthandle host;
	long ret;

	adapter = dxg_va_adapter(proc, args->adapter);
	if (!adapter)
		return -EBADF;
	ret = dxg_process_host(proc, &host);
	if (ret)
		return ret;
	dxgvm_vgpu_header(&cmd.hdr, proc, DXGK_VMBCOMMAND_FREEGPUVIRTUALADDRESS);
	cmd.args = *args;
	cmd.args.adapter = adapter->host_handle;
	return dxgvm_send_status(proc, adapter, &cmd, sizeof(cmd),
				 DXGVM_WAIT_KILLABLE);
}

/* ---- contexts and queues --------------------------------------------------------- */

/* A new object entered under `handle`; the caller keeps a reference. */
static struct dxg_object *dxg_enter(struct dxg_process *proc,
				    enum dxg_obj_type type,
				    struct dxg_adapter *adapter,
				    struct d3dkmthandle device,
				    struct d3dkmthandle handle, long *ret)
{
	struct dxg_object *obj = dxg_object_new(proc, type, adapter, device);

	if (!obj) {
		*ret = -ENOMEM;
		return NULL;
	}
	kref_get(&obj->ref);
	*ret = dxg_process_add_object(proc, obj, handle);
	if (*ret) {
		obj->handle = handle;
		dxg_object_put(obj);
		dxg_object_put(obj);
		return NULL;
	}
	return obj;
}

/* Takes an object out of the table, tells the host, lets go of it. */
static long dxg_destroy(struct dxg_process *proc, struct d3dkmthandle handle,
			enum dxg_obj_type type)
{
	struct dxg_object *obj, *fence = NULL;
	long ret;

	obj = dxg_process_take_object(proc, handle, DXG_OBJ_MASK(type));
	if (!obj)
		return -EBADF;
	if (obj->fence.v)
		fence = dxg_process_take_object(proc, obj->fence,
						DXG_OBJ_MASK(DXG_OBJ_QUEUE_FENCE));
	ret = dxgvmb_destroy_object(proc, obj);
	/* A context takes its hardware queues and their fences with it. */
	if (type == DXG_OBJ_CONTEXT && (ret >= 0 || ret == -ENODEV))
		dxg_process_drop_children(proc,
					  DXG_OBJ_MASK(DXG_OBJ_HWQUEUE) |
					  DXG_OBJ_MASK(DXG_OBJ_QUEUE_FENCE),
					  obj->device, obj->handle);
	dxg_object_put(fence);
	dxg_object_retire(proc, obj, ret);
	return ret;
}

static long dxgk_create_context_virtual(struct dxg_process *proc,
					struct file *file, void *p)
{
	struct d3dkmt_createcontextvirtual *args = p;
	struct dxgkvmb_command_createcontextvirtual *cmd, *r;
	struct dxg_adapter *adapter;
	struct dxg_object *obj;
	u32 size = args->priv_drv_data_size;
	struct dxg_req *req;
	long ret;

	adapter = dxg_process_device(proc, args->device);
	if (!adapter)
		return -EBADF;
	if (size > DXG_MAX_PRIV_DATA || (size && !args->priv_drv_data))
		return -EINVAL;
	req = dxgvm_req_alloc(sizeof(*cmd) + size, sizeof(*r) + size);
	if (!req)
		return -ENOMEM;
	cmd = dxgvm_req_cmd(req);
	dxgvm_vgpu_header(&cmd->hdr, proc, DXGK_VMBCOMMAND_CREATECONTEXTVIRTUAL);
	cmd->device = args->device;
	cmd->node_ordinal = args->node_ordinal;
	cmd->engine_affinity = args->engine_affinity;
	cmd->flags = args->flags;
	cmd->client_hint = args->client_hint;
	cmd->priv_drv_data_size = size;
	if (size && copy_from_user(cmd + 1, u64_to_user_ptr(args->priv_drv_data),
				   size)) {
		dxgvm_req_put(req);
		return -EFAULT;
	}
	ret = dxgvm_send(proc, adapter, req, DXGVM_WAIT_KILLABLE);
	if (ret)
		goto out;
	r = dxgvm_req_reply(req);
	obj = dxg_enter(proc, DXG_OBJ_CONTEXT, adapter, args->device,
			r->context, &ret);
	if (!obj) {
		struct dxg_object tmp = { .type = DXG_OBJ_CONTEXT,
					  .adapter = adapter,
					  .handle = r->context };

		if (r->context.v && ret != -EBUSY)
			dxgvmb_destroy_object(proc, &tmp);
		goto out;
	}
	args->context = obj->handle;
	dxg_object_put(obj);
	/* The host's private data comes back (it may have filled it in). */
	if (size && copy_to_user(u64_to_user_ptr(args->priv_drv_data), r + 1,
				 size)) {
		dxg_destroy(proc, args->context, DXG_OBJ_CONTEXT);
		ret = -EFAULT;
	}
out:
	dxgvm_req_put(req);
	return ret;
}

static void dxgk_create_context_undo(struct dxg_process *proc, void *p)
{
	struct d3dkmt_createcontextvirtual *args = p;

	dxg_destroy(proc, args->context, DXG_OBJ_CONTEXT);
}

static long dxgk_destroy_context(struct dxg_process *proc, struct file *file,
				 void *p)
{
	struct d3dkmt_destroycontext *args = p;

	return dxg_destroy(proc, args->context, DXG_OBJ_CONTEXT);
}

/*
 * CREATEHWQUEUE (§2.6.5): the progress fence lives in a fence slot like a
 * sync object's; it is entered as a queue fence that waits and signals
 * accept and that goes with the queue.
 */
static long dxgk_create_hwqueue(struct dxg_process *proc, struct file *file,
				void *p)
{
	struct d3dkmt_createhwqueue *args = p;
	struct dxgkvmb_command_createhwqueue *cmd, *r;
	struct dxg_object *ctx, *q = NULL, *f;
	u32 size = args->priv_drv_data_size;
	struct dxg_req *req = NULL;
	int slot;
	u64 gpa;
	long ret;

	ctx = dxg_lookup(proc, args->context, DXG_OBJ_MASK(DXG_OBJ_CONTEXT),
			 (struct d3dkmthandle){});
	if (!ctx)
		return -EBADF;
	if (size > DXG_MAX_PRIV_DATA || (size && !args->priv_drv_data)) {
		ret = -EINVAL;
		goto out_ctx;
	}
	slot = dxg_fence_slot_alloc(proc, 0, &gpa);
	if (slot < 0) {
		ret = slot;
		goto out_ctx;
	}
	req = dxgvm_req_alloc(sizeof(*cmd) + size, sizeof(*r) + size);
	if (!req) {
		ret = -ENOMEM;
		goto out_slot;
	}
	cmd = dxgvm_req_cmd(req);
	dxgvm_vgpu_header(&cmd->hdr, proc, DXGK_VMBCOMMAND_CREATEHWQUEUE);
	cmd->hwqueue_progress_fence_cpuva = gpa;
	cmd->context = args->context;
	cmd->flags = args->flags;
	cmd->priv_drv_data_size = size;
	if (size && copy_from_user(cmd + 1, u64_to_user_ptr(args->priv_drv_data),
				   size)) {
		ret = -EFAULT;
		goto out_slot;
	}
	ret = dxgvm_send(proc, ctx->adapter, req, DXGVM_WAIT_KILLABLE);
	if (ret)
		goto out_slot;
	r = dxgvm_req_reply(req);
	ret = dxgvm_errno(r->status.v);
	if (ret < 0)
		goto out_slot;
	q = dxg_enter(proc, DXG_OBJ_HWQUEUE, ctx->adapter, ctx->device,
		      r->hwqueue, &ret);
	if (!q) {
		struct dxg_object tmp = { .type = DXG_OBJ_HWQUEUE,
					  .adapter = ctx->adapter,
					  .handle = r->hwqueue };

		if (r->hwqueue.v && ret != -EBUSY)
			dxgvmb_destroy_object(proc, &tmp);
		goto out_slot;
	}
	/* From here the queue owns the slot; destroying it frees it. */
	q->slot = slot;
	q->parent = args->context;
	q->fence = r->hwqueue_progress_fence;
	f = dxg_enter(proc, DXG_OBJ_QUEUE_FENCE, ctx->adapter, ctx->device,
		      r->hwqueue_progress_fence, &ret);
	if (!f) {
		q->fence.v = 0;
		goto fail;
	}
	f->slot = slot;
	f->parent = args->context;
	dxg_object_put(f);
	mutex_lock(&proc->lock);
	ret = dxg_fence_slot_uaddr(file, slot, &args->queue_progress_fence_cpu_va);
	mutex_unlock(&proc->lock);
	if (ret)
		goto fail;
	args->queue = q->handle;
	args->queue_progress_fence = r->hwqueue_progress_fence;
	args->queue_progress_fence_gpu_va = r->hwqueue_progress_fence_gpuva;
	dxg_object_put(q);
	goto out;

fail:
	dxg_object_put(q);
	dxg_destroy(proc, r->hwqueue, DXG_OBJ_HWQUEUE);
	goto out;
out_slot:
	dxg_fence_slot_free(proc, slot);
out:
	dxgvm_req_put(req);
out_ctx:
	dxg_object_put(ctx);
	return ret;
}

static void dxgk_create_hwqueue_undo(struct dxg_process *proc, void *p)
{
	struct d3dkmt_createhwqueue *args = p;

	dxg_destroy(proc, args->queue, DXG_OBJ_HWQUEUE);
}

static long dxgk_destroy_hwqueue(struct dxg_process *proc, struct file *file,
				 void *p)
{
	struct d3dkmt_destroyhwqueue *args = p;

	return dxg_destroy(proc, args->queue, DXG_OBJ_HWQUEUE);
}

/*
 * CREATEPAGINGQUEUE: the host keeps a paging queue's fence itself (no
 * guest slot), so fence_cpu_virtual_address comes back 0; the fence is
 * entered so that waits accept it.
 */
static long dxgk_create_paging_queue(struct dxg_process *proc,
				     struct file *file, void *p)
{
	struct d3dkmt_createpagingqueue *args = p;
	struct dxgkvmb_command_createpagingqueue cmd = {};
	struct dxgkvmb_command_createpagingqueue_return r;
	struct dxg_adapter *adapter;
	struct dxg_object *q, *f;
	long ret;

	adapter = dxg_process_device(proc, args->device);
	if (!adapter)
		return -EBADF;
	dxgvm_vgpu_header(&cmd.hdr, proc, DXGK_VMBCOMMAND_CREATEPAGINGQUEUE);
	cmd.args = *args;
	cmd.args.fence_cpu_virtual_address = 0;
	ret = dxgvm_send_reply(proc, adapter, &cmd, sizeof(cmd), &r, sizeof(r),
			       DXGVM_WAIT_KILLABLE);
	if (ret)
		return ret;
	q = dxg_enter(proc, DXG_OBJ_PAGINGQUEUE, adapter, args->device,
		      r.paging_queue, &ret);
	if (!q) {
		struct dxg_object tmp = { .type = DXG_OBJ_PAGINGQUEUE,
					  .adapter = adapter,
					  .handle = r.paging_queue };

		if (r.paging_queue.v && ret != -EBUSY)
			dxgvmb_destroy_object(proc, &tmp);
		return ret;
	}
	if (r.sync_object.v) {
		q->fence = r.sync_object;
		f = dxg_enter(proc, DXG_OBJ_QUEUE_FENCE, adapter, args->device,
			      r.sync_object, &ret);
		if (!f) {
			q->fence.v = 0;
			dxg_object_put(q);
			dxg_destroy(proc, r.paging_queue, DXG_OBJ_PAGINGQUEUE);
			return ret;
		}
		dxg_object_put(f);
	}
	dxg_object_put(q);
	args->paging_queue = r.paging_queue;
	args->sync_object = r.sync_object;
	args->fence_cpu_virtual_address = 0;
	return 0;
}

static void dxgk_create_paging_queue_undo(struct dxg_process *proc, void *p)
{
	struct d3dkmt_createpagingqueue *args = p;

	dxg_destroy(proc, args->paging_queue, DXG_OBJ_PAGINGQUEUE);
}

static long dxgk_destroy_paging_queue(struct dxg_process *proc,
				      struct file *file, void *p)
{
	struct d3dddi_destroypagingqueue *args = p;

	return dxg_destroy(proc, args->paging_queue, DXG_OBJ_PAGINGQUEUE);
}

/* ---- submission and escapes ------------------------------------------------------- */

/* Copies a private data blob the host ignores but the message carries. */
static int dxg_copy_priv(void *dst, u64 uptr, u32 size)
{
	if (!size)
		return 0;
	if (!uptr)
		return -EINVAL;
	return copy_from_user(dst, u64_to_user_ptr(uptr), size) ? -EFAULT : 0;
}

static long dxgk_submit_command(struct dxg_process *proc, struct file *file,
				void *p)
{
	struct d3dkmt_submitcommand *args = p;
	struct dxgkvmb_command_submitcommand *cmd;
	struct d3dkmthandle *history = NULL;
	u32 nh = args->num_history_buffers, size = args->priv_drv_data_size;
	struct dxg_object *ctx;
	struct dxg_req *req;
	bool async;
	long ret;

	if (!args->broadcast_context_count ||
	    args->broadcast_context_count > D3DDDI_MAX_BROADCAST_CONTEXT ||
	    args->num_primaries > D3DDDI_MAX_WRITTEN_PRIMARIES ||
	    nh > DXG_MAX_HISTORY_BUFFERS || size > DXG_MAX_PRIV_DATA)
		return -EINVAL;
	ctx = dxg_lookup(proc, args->broadcast_context[0],
			 DXG_OBJ_MASK(DXG_OBJ_CONTEXT), (struct d3dkmthandle){});
	if (!ctx)
		return -EBADF;
	ret = dxg_check_handles(proc, ctx->device, args->broadcast_context,
				args->broadcast_context_count,
				DXG_OBJ_MASK(DXG_OBJ_CONTEXT));
	if (!ret)
		ret = dxg_check_handles(proc, ctx->device,
					args->written_primaries,
					args->num_primaries,
					DXG_OBJ_MASK(DXG_OBJ_ALLOCATION));
	if (ret)
		goto out;
	if (nh) {
		history = dxg_allocation_list(proc, ctx->device,
					      args->history_buffer_array, nh);
		if (IS_ERR(history)) {
			ret = PTR_ERR(history);
			history = NULL;
			goto out;
		}
	}
	async = READ_ONCE(dxg_async_submit);
	req = dxgvm_req_alloc(sizeof(*cmd) + nh * sizeof(*history) + size,
			      async ? 0 : sizeof(struct ntstatus));
	if (!req) {
		ret = -ENOMEM;
		goto out;
	}
	cmd = dxgvm_req_cmd(req);
	dxgvm_vgpu_header(&cmd->hdr, proc, DXGK_VMBCOMMAND_SUBMITCOMMAND);
	cmd->hdr.async_msg = async;
	cmd->args = *args;
	if (nh)
		memcpy(cmd + 1, history, nh * sizeof(*history));
	ret = dxg_copy_priv((u8 *)(cmd + 1) + nh * sizeof(*history),
			    args->priv_drv_data, size);
	if (ret) {
		dxgvm_req_put(req);
		goto out;
	}
	ret = dxg_send_submission(proc, ctx->adapter, req, async);
out:
	kvfree(history);
	dxg_object_put(ctx);
	return ret;
}

static long dxgk_submit_command_to_hwqueue(struct dxg_process *proc,
					   struct file *file, void *p)
{
	struct d3dkmt_submitcommandtohwqueue *args = p;
	struct dxgkvmb_command_submitcommandtohwqueue *cmd;
	struct d3dkmthandle prim[D3DDDI_MAX_WRITTEN_PRIMARIES];
	u32 np = args->num_primaries, size = args->priv_drv_data_size;
	struct dxg_object *q;
	struct dxg_req *req;
	bool async;
	long ret;

	if (np > D3DDDI_MAX_WRITTEN_PRIMARIES || size > DXG_MAX_PRIV_DATA)
		return -EINVAL;
	q = dxg_lookup(proc, args->hwqueue, DXG_OBJ_MASK(DXG_OBJ_HWQUEUE),
		       (struct d3dkmthandle){});
	if (!q)
		return -EBADF;
	ret = 0;
	if (np) {
		if (!args->written_primaries)
			ret = -EINVAL;
		else if (copy_from_user(prim, u64_to_user_ptr(args->written_primaries),
					np * sizeof(*prim)))
			ret = -EFAULT;
		else
			ret = dxg_check_handles(proc, q->device, prim, np,
						DXG_OBJ_MASK(DXG_OBJ_ALLOCATION));
	}
	if (ret)
		goto out;
	async = READ_ONCE(dxg_async_submit);
	req = dxgvm_req_alloc(sizeof(*cmd) + np * sizeof(*prim) + size,
			      async ? 0 : sizeof(struct ntstatus));
	if (!req) {
		ret = -ENOMEM;
		goto out;
	}
	cmd = dxgvm_req_cmd(req);
	dxgvm_vgpu_header(&cmd->hdr, proc,
			  DXGK_VMBCOMMAND_SUBMITCOMMANDTOHWQUEUE);
	cmd->hdr.async_msg = async;
	cmd->args = *args;
	memcpy(cmd + 1, prim, np * sizeof(*prim));
	ret = dxg_copy_priv((u8 *)(cmd + 1) + np * sizeof(*prim),
			    args->priv_drv_data, size);
	if (ret) {
		dxgvm_req_put(req);
		goto out;
	}
	ret = dxg_send_submission(proc, q->adapter, req, async);
out:
	dxg_object_put(q);
	return ret;
}

/*
 * ESCAPE (§2.6.9): the private data goes to the host and the same number
 * of bytes comes back over it.
 */
static long dxgk_escape(struct dxg_process *proc, struct file *file, void *p)
{
	struct d3dkmt_escape *args = p;
	struct dxgkvmb_command_escape *cmd;
	struct dxg_adapter *adapter, *dev_adapter;
	struct dxg_object *ctx;
	u32 size = args->priv_drv_data_size;
	struct d3dkmthandle host;
	struct dxg_req *req;
	long ret;

	adapter = dxg_process_adapter(proc, args->adapter);
	if (!adapter)
		return -EBADF;
	if (args->device.v) {
		dev_adapter = dxg_process_device(proc, args->device);
		if (dev_adapter != adapter)
			return -EBADF;
	}
	if (args->context.v) {
		ctx = dxg_lookup(proc, args->context,
				 DXG_OBJ_MASK(DXG_OBJ_CONTEXT), args->device);
		if (!ctx)
			return -EBADF;
		dxg_object_put(ctx);
	}
	/* Both ways the frame carries it: 128 KiB (or less) minus headers. */
	if (!size || size > proc->dxg->max_payload ||
	    size + sizeof(*cmd) > proc->dxg->max_payload || !args->priv_drv_data)
		return -EINVAL;
	ret = dxg_process_host(proc, &host);
	if (ret)
		return ret;
	req = dxgvm_req_alloc(sizeof(*cmd) + size, size);
	if (!req)
		return -ENOMEM;
	cmd = dxgvm_req_cmd(req);
	dxgvm_vgpu_header(&cmd->hdr, proc, DXGK_VMBCOMMAND_ESCAPE);
	cmd->adapter = adapter->host_handle;
	cmd->device = args->device;
	cmd->type = args->type;
	cmd->flags = args->flags;
	cmd->priv_drv_data_size = size;
	cmd->context = args->context;
	if (copy_from_user(cmd + 1, u64_to_user_ptr(args->priv_drv_data), size)) {
		ret = -EFAULT;
		goto out;
	}
	ret = dxgvm_send(proc, adapter, req, DXGVM_WAIT_KILLABLE);
	if (!ret && copy_to_user(u64_to_user_ptr(args->priv_drv_data),
				 dxgvm_req_reply(req), size))
		ret = -EFAULT;
out:
	dxgvm_req_put(req);
	return ret;
}

/* ---- sync objects, signals and waits -------------------------------------------- */

/*
 * CREATESYNCHRONIZATIONOBJECT (§2.6.4): monitored fences only; the value
 * lives in a fence slot the host writes and the caller reads.
 */
static long dxgk_create_sync_object(struct dxg_process *proc,
				    struct file *file, void *p)
{
	struct d3dkmt_createsynchronizationobject2 *args = p;
	struct dxgkvmb_command_createsyncobject cmd = {};
	struct dxgkvmb_command_createsyncobject_return r;
	struct dxg_adapter *adapter;
	struct dxg_object *obj;
	int slot;
	u64 gpa;
	long ret;

	adapter = dxg_process_device(proc, args->device);
	if (!adapter)
		return -EBADF;
	if (args->info.type != _D3DDDI_MONITORED_FENCE)
		return -EPERM;		/* STATUS_NOT_SUPPORTED */
	slot = dxg_fence_slot_alloc(proc,
				    args->info.monitored_fence.initial_fence_value,
				    &gpa);
	if (slot < 0)
		return slot;
	dxgvm_vgpu_header(&cmd.hdr, proc, DXGK_VMBCOMMAND_CREATESYNCOBJECT);
	cmd.args = *args;
	cmd.args.info.monitored_fence.fence_cpu_virtual_address = gpa;
	cmd.args.info.monitored_fence.fence_gpu_virtual_address = 0;
	ret = dxgvm_send_reply(proc, adapter, &cmd, sizeof(cmd), &r, sizeof(r),
			       DXGVM_WAIT_KILLABLE);
	if (ret) {
		dxg_fence_slot_free(proc, slot);
		return ret;
	}
	obj = dxg_enter(proc, DXG_OBJ_SYNCOBJ, adapter, args->device,
			r.sync_object, &ret);
	if (!obj) {
		struct dxg_object tmp = { .type = DXG_OBJ_SYNCOBJ,
					  .handle = r.sync_object };

		if (r.sync_object.v && ret != -EBUSY)
			dxgvmb_destroy_object(proc, &tmp);
		dxg_fence_slot_free(proc, slot);
		return ret;
	}
	obj->slot = slot;
	dxg_object_put(obj);
	if (r.fence_storage_address != gpa || r.fence_storage_offset) {
		pr_warn_ratelimited("CREATESYNCOBJECT: fence storage is not the slot\n");
		dxg_destroy(proc, r.sync_object, DXG_OBJ_SYNCOBJ);
		return -EPROTO;
	}
	mutex_lock(&proc->lock);
	ret = dxg_fence_slot_uaddr(file, slot,
				   &args->info.monitored_fence.fence_cpu_virtual_address);
	mutex_unlock(&proc->lock);
	if (ret) {
		dxg_destroy(proc, r.sync_object, DXG_OBJ_SYNCOBJ);
		return ret;
	}
	args->info.monitored_fence.fence_gpu_virtual_address = r.fence_gpu_va;
	args->sync_object = r.sync_object;
	return 0;
}

static void dxgk_create_sync_object_undo(struct dxg_process *proc, void *p)
{
	struct d3dkmt_createsynchronizationobject2 *args = p;

	dxg_destroy(proc, args->sync_object, DXG_OBJ_SYNCOBJ);
}

static long dxgk_destroy_sync_object(struct dxg_process *proc,
				     struct file *file, void *p)
{
	struct d3dkmt_destroysynchronizationobject *args = p;

	return dxg_destroy(proc, args->sync_object, DXG_OBJ_SYNCOBJ);
}

/*
 * The fences and values of a signal or wait: 1..32 fences of `device`,
 * and `nvalues` (0 or count) values.
 */
static int dxg_fence_args(struct dxg_process *proc, struct d3dkmthandle device,
			  u32 count, u64 uobjects, u64 uvalues, u32 nvalues,
			  struct d3dkmthandle **objects, u64 **values)
{
	int ret;

	*objects = NULL;
	*values = NULL;
	if (!count || count > D3DDDI_MAX_OBJECT_WAITED_ON)
		return -EINVAL;
	*objects = dxg_copy_array(uobjects, count, sizeof(**objects));
	if (IS_ERR(*objects)) {
		ret = PTR_ERR(*objects);
		*objects = NULL;
		return ret;
	}
	ret = dxg_check_handles(proc, device, *objects, count, DXG_OBJS_FENCE);
	if (ret)
		return ret;
	if (nvalues) {
		*values = dxg_copy_array(uvalues, nvalues, sizeof(**values));
		if (IS_ERR(*values)) {
			ret = PTR_ERR(*values);
			*values = NULL;
			return ret;
		}
	}
	return 0;
}

/*
 * SIGNALSYNCOBJECT: object handles, context handles, then `nvalues`
 * values; the device (from the CPU) or 0 in the union.
 */
static long dxg_signal(struct dxg_process *proc, struct dxg_adapter *adapter,
		       struct d3dkmthandle device, struct d3dddicb_signalflags flags,
		       const struct d3dkmthandle *objects, u32 count,
		       const struct d3dkmthandle *contexts, u32 ncontexts,
		       const u64 *values, u32 nvalues, u64 fence_value)
{
	struct dxgkvmb_command_signalsyncobject *cmd;
	/* A signal from the GPU goes like a submission (WSL sends both). */
	bool async = ncontexts && READ_ONCE(dxg_async_submit);
	struct dxg_req *req;
	u8 *tail;

	req = dxgvm_req_alloc(sizeof(*cmd) + count * sizeof(*objects) +
			      ncontexts * sizeof(*contexts) +
			      nvalues * sizeof(u64),
			      async ? 0 : sizeof(struct ntstatus));
	if (!req)
		return -ENOMEM;
	cmd = dxgvm_req_cmd(req);
	dxgvm_vgpu_header(&cmd->hdr, proc, DXGK_VMBCOMMAND_SIGNALSYNCOBJECT);
	cmd->hdr.async_msg = async;
	cmd->object_count = count;
	cmd->flags = flags;
	cmd->context_count = ncontexts;
	cmd->fence_value = fence_value;
	cmd->device = device;
	tail = (u8 *)(cmd + 1);
	memcpy(tail, objects, count * sizeof(*objects));
	tail += count * sizeof(*objects);
	memcpy(tail, contexts, ncontexts * sizeof(*contexts));
	tail += ncontexts * sizeof(*contexts);
	memcpy(tail, values, nvalues * sizeof(u64));
	return dxg_send_submission(proc, adapter, req, async);
}

/* Flags dxvmm does not do: CPU events and sharing across processes. */
static bool dxg_signal_flags_ok(struct d3dddicb_signalflags flags)
{
	return !flags.enqueue_cpu_event && !flags.reserved &&
	       !flags.DXGK_SIGNAL_FLAG_INTERNAL0;
}

static long dxgk_signal_from_cpu(struct dxg_process *proc, struct file *file,
				 void *p)
{
	struct d3dkmt_signalsynchronizationobjectfromcpu *args = p;
	struct d3dkmthandle *objects;
	struct dxg_adapter *adapter;
	u64 *values;
	long ret;

	adapter = dxg_process_device(proc, args->device);
	if (!adapter)
		return -EBADF;
	if (!dxg_signal_flags_ok(args->flags))
		return -EINVAL;
	ret = dxg_fence_args(proc, args->device, args->object_count,
			     args->objects, args->fence_values,
			     args->object_count, &objects, &values);
	if (!ret)
		ret = dxg_signal(proc, adapter, args->device, args->flags,
				 objects, args->object_count, NULL, 0,
				 values, args->object_count, 0);
	kvfree(values);
	kvfree(objects);
	return ret;
}

static long dxgk_signal_from_gpu(struct dxg_process *proc, struct file *file,
				 void *p)
{
	struct d3dkmt_signalsynchronizationobjectfromgpu *args = p;
	struct d3dkmthandle *objects;
	struct dxg_object *ctx;
	u64 *values;
	long ret;

	ctx = dxg_lookup(proc, args->context, DXG_OBJ_MASK(DXG_OBJ_CONTEXT),
			 (struct d3dkmthandle){});
	if (!ctx)
		return -EBADF;
	ret = dxg_fence_args(proc, ctx->device, args->object_count,
			     args->objects, args->monitored_fence_values,
			     args->object_count, &objects, &values);
	if (!ret)
		ret = dxg_signal(proc, ctx->adapter, (struct d3dkmthandle){},
				 (struct d3dddicb_signalflags){}, objects,
				 args->object_count, &args->context, 1,
				 values, args->object_count, 0);
	kvfree(values);
	kvfree(objects);
	dxg_object_put(ctx);
	return ret;
}

/* One value for every object, in the message's fence_value (no tail). */
static long dxgk_signal_from_gpu2(struct dxg_process *proc, struct file *file,
				  void *p)
{
	struct d3dkmt_signalsynchronizationobjectfromgpu2 *args = p;
	struct d3dkmthandle *objects = NULL, *contexts;
	u32 nc = args->context_count;
	struct dxg_object *ctx;
	u64 *values;
	long ret;

	if (!nc || nc > D3DDDI_MAX_BROADCAST_CONTEXT ||
	    !dxg_signal_flags_ok(args->flags))
		return -EINVAL;
	contexts = dxg_copy_array(args->contexts, nc, sizeof(*contexts));
	if (IS_ERR(contexts))
		return PTR_ERR(contexts);
	ctx = dxg_lookup(proc, contexts[0], DXG_OBJ_MASK(DXG_OBJ_CONTEXT),
			 (struct d3dkmthandle){});
	if (!ctx) {
		kvfree(contexts);
		return -EBADF;
	}
	ret = dxg_check_handles(proc, ctx->device, contexts, nc,
				DXG_OBJ_MASK(DXG_OBJ_CONTEXT));
	if (!ret)
		ret = dxg_fence_args(proc, ctx->device, args->object_count,
				     args->objects, 0, 0, &objects, &values);
	if (!ret)
		ret = dxg_signal(proc, ctx->adapter, (struct d3dkmthandle){},
				 args->flags, objects, args->object_count,
				 contexts, nc, NULL, 0, args->fence_value);
	kvfree(objects);
	kvfree(contexts);
	dxg_object_put(ctx);
	return ret;
}

/*
 * WAITFORSYNCOBJECTFROMCPU with async_event (an eventfd, as in WSL): the
 * call returns at once, and the driver signals the eventfd when the host
 * says the wait ended (satisfied, or abandoned by a destroy: the caller
 * looks at its fences), at once if it is satisfied already, and when the
 * device goes. An error from the host ends it unsignalled.
 */
static long dxgk_wait_from_cpu_async(struct dxg_process *proc,
				     struct dxg_adapter *adapter,
				     struct d3dkmt_waitforsynchronizationobjectfromcpu *args,
				     const struct d3dkmthandle *objects,
				     const u64 *values)
{
	struct eventfd_ctx *event;
	u64 cookie;
	long ret;

	if (args->async_event > INT_MAX)
		return -EBADF;
	event = eventfd_ctx_fdget((int)args->async_event);
	if (IS_ERR(event))
		return PTR_ERR(event);
	ret = dxgvm_async_waiter_add(proc->dxg, proc, event, &cookie);
	if (ret)
		return ret;
	ret = dxgvmb_wait_from_cpu(proc, adapter, args, objects, values,
				   cookie);
	if (ret == STATUS_PENDING)
		return 0;
	dxgvm_async_waiter_end(proc->dxg, cookie, ret == 0);
	return ret;
}

/*
 * WAITFORSYNCOBJECTFROMCPU (§2.6.8). The waiter is registered under a
 * fresh cookie before the request goes, so an event that overtakes the
 * reply is not lost. The struct has no timeout: the wait ends when the
 * host signals the cookie, on a signal (-EINTR) or when the device goes.
 * The host signals the cookie also when the wait can no longer be
 * satisfied, because a fence it names was destroyed (with its device,
 * context or queue); that is -ENOENT.
 */
static long dxgk_wait_from_cpu(struct dxg_process *proc, struct file *file,
			       void *p)
{
	struct d3dkmt_waitforsynchronizationobjectfromcpu *args = p;
	struct d3dkmthandle *objects;
	struct dxg_adapter *adapter;
	struct dxg_waiter w;
	u64 *values;
	long ret;

	adapter = dxg_process_device(proc, args->device);
	if (!adapter)
		return -EBADF;
	if (args->flags.reserved)
		return -EINVAL;
	ret = dxg_fence_args(proc, args->device, args->object_count,
			     args->objects, args->fence_values,
			     args->object_count, &objects, &values);
	if (ret)
		goto out;
	if (args->async_event) {
		ret = dxgk_wait_from_cpu_async(proc, adapter, args, objects,
					       values);
		goto out;
	}
	dxgvm_waiter_add(proc->dxg, &w);
	ret = dxgvmb_wait_from_cpu(proc, adapter, args, objects, values,
				   w.cookie);
	if (ret == STATUS_PENDING) {
		if (wait_for_completion_interruptible(&w.done))
			ret = -EINTR;
		else
			ret = w.result;
		/*
		 * Satisfied or abandoned: the destroy that abandons a wait
		 * went through this process's table first (§2.6.8).
		 */
		if (!ret && !dxg_process_fences_live(proc, args->device,
						     objects,
						     args->object_count))
			ret = -ENOENT;
	}
	dxgvm_waiter_del(proc->dxg, &w);
out:
	kvfree(values);
	kvfree(objects);
	return ret;
}

static long dxgk_wait_from_gpu(struct dxg_process *proc, struct file *file,
			       void *p)
{
	struct d3dkmt_waitforsynchronizationobjectfromgpu *args = p;
	struct dxgkvmb_command_waitforsyncobjectfromgpu *cmd;
	struct d3dkmthandle *objects;
	u32 n = args->object_count;
	struct dxg_object *ctx;
	struct dxg_req *req;
	u64 *values;
	long ret;

	ctx = dxg_lookup(proc, args->context, DXG_OBJ_MASK(DXG_OBJ_CONTEXT),
			 (struct d3dkmthandle){});
	if (!ctx)
		return -EBADF;
	ret = dxg_fence_args(proc, ctx->device, n, args->objects,
			     args->monitored_fence_values, n, &objects, &values);
	if (ret)
		goto out;
	req = dxgvm_req_alloc(sizeof(*cmd) + n * (sizeof(u64) + sizeof(*objects)),
			      sizeof(struct ntstatus));
	if (!req) {
		ret = -ENOMEM;
		goto out;
	}
	cmd = dxgvm_req_cmd(req);
	dxgvm_vgpu_header(&cmd->hdr, proc,
			  DXGK_VMBCOMMAND_WAITFORSYNCOBJECTFROMGPU);
	cmd->context = args->context;
	cmd->object_count = n;
	/* Values first, then handles (§5.1). */
	memcpy(cmd + 1, values, n * sizeof(u64));
	memcpy((u8 *)(cmd + 1) + n * sizeof(u64), objects, n * sizeof(*objects));
	ret = dxg_send_status(proc, ctx->adapter, req, DXGVM_WAIT_KILLABLE);
out:
	kvfree(values);
	kvfree(objects);
	dxg_object_put(ctx);
	return ret;
}

#define DXG_IOCTL_UNDO(_cmd, _fn, _undo) \
	[_IOC_NR(_cmd)] = { \
		.cmd = (_cmd) + \
			BUILD_BUG_ON_ZERO(_IOC_SIZE(_cmd) > DXG_IOCTL_ARG_MAX), \
		.fn = (_fn), \
		.undo = (_undo), \
		.name = #_cmd, \
	}
#define DXG_IOCTL(_cmd, _fn) DXG_IOCTL_UNDO(_cmd, _fn, NULL)

/*
 * Ioctls of WSL's table that are not here (render, present, sharing,
 * statistics, ...) get -ENOTTY.
 */
static const struct dxg_ioctl dxg_ioctls[] = {
	DXG_IOCTL(LX_DXOPENADAPTERFROMLUID, dxgk_open_adapter_from_luid),
	DXG_IOCTL_UNDO(LX_DXCREATEDEVICE, dxgk_create_device,
		       dxgk_create_device_undo),
	DXG_IOCTL_UNDO(LX_DXCREATECONTEXTVIRTUAL, dxgk_create_context_virtual,
		       dxgk_create_context_undo),
	DXG_IOCTL(LX_DXDESTROYCONTEXT, dxgk_destroy_context),
	DXG_IOCTL(LX_DXCREATEALLOCATION, dxgk_create_allocation),
	DXG_IOCTL_UNDO(LX_DXCREATEPAGINGQUEUE, dxgk_create_paging_queue,
		       dxgk_create_paging_queue_undo),
	DXG_IOCTL(LX_DXRESERVEGPUVIRTUALADDRESS, dxgk_reserve_gpu_va),
	DXG_IOCTL(LX_DXQUERYADAPTERINFO, dxgk_query_adapter_info),
	DXG_IOCTL(LX_DXQUERYVIDEOMEMORYINFO, dxgk_query_video_memory_info),
	DXG_IOCTL(LX_DXMAKERESIDENT, dxgk_make_resident),
	DXG_IOCTL(LX_DXMAPGPUVIRTUALADDRESS, dxgk_map_gpu_va),
	DXG_IOCTL(LX_DXESCAPE, dxgk_escape),
	DXG_IOCTL(LX_DXSUBMITCOMMAND, dxgk_submit_command),
	DXG_IOCTL_UNDO(LX_DXCREATESYNCHRONIZATIONOBJECT, dxgk_create_sync_object,
		       dxgk_create_sync_object_undo),
	DXG_IOCTL(LX_DXDESTROYALLOCATION2, dxgk_destroy_allocation2),
	DXG_IOCTL(LX_DXENUMADAPTERS2, dxgk_enum_adapters2),
	DXG_IOCTL(LX_DXCLOSEADAPTER, dxgk_close_adapter),
	DXG_IOCTL_UNDO(LX_DXCREATEHWQUEUE, dxgk_create_hwqueue,
		       dxgk_create_hwqueue_undo),
	DXG_IOCTL(LX_DXDESTROYDEVICE, dxgk_destroy_device),
	DXG_IOCTL(LX_DXDESTROYHWQUEUE, dxgk_destroy_hwqueue),
	DXG_IOCTL(LX_DXDESTROYPAGINGQUEUE, dxgk_destroy_paging_queue),
	DXG_IOCTL(LX_DXDESTROYSYNCHRONIZATIONOBJECT, dxgk_destroy_sync_object),
	DXG_IOCTL(LX_DXEVICT, dxgk_evict),
	DXG_IOCTL(LX_DXFREEGPUVIRTUALADDRESS, dxgk_free_gpu_va),
	DXG_IOCTL(LX_DXLOCK2, dxgk_lock2),
	DXG_IOCTL(LX_DXQUERYALLOCATIONRESIDENCY, dxgk_query_allocation_residency),
	DXG_IOCTL(LX_DXSETALLOCATIONPRIORITY, dxgk_set_allocation_priority),
	DXG_IOCTL(LX_DXSIGNALSYNCHRONIZATIONOBJECTFROMCPU, dxgk_signal_from_cpu),
	DXG_IOCTL(LX_DXSIGNALSYNCHRONIZATIONOBJECTFROMGPU, dxgk_signal_from_gpu),
	DXG_IOCTL(LX_DXSIGNALSYNCHRONIZATIONOBJECTFROMGPU2, dxgk_signal_from_gpu2),
	DXG_IOCTL(LX_DXSUBMITCOMMANDTOHWQUEUE, dxgk_submit_command_to_hwqueue),
	DXG_IOCTL(LX_DXUNLOCK2, dxgk_unlock2),
	DXG_IOCTL(LX_DXWAITFORSYNCHRONIZATIONOBJECTFROMCPU, dxgk_wait_from_cpu),
	DXG_IOCTL(LX_DXWAITFORSYNCHRONIZATIONOBJECTFROMGPU, dxgk_wait_from_gpu),
	DXG_IOCTL(LX_DXGETALLOCATIONPRIORITY, dxgk_get_allocation_priority),
	DXG_IOCTL(LX_DXENUMADAPTERS3, dxgk_enum_adapters3),
};

long dxg_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct dxg_process *proc = file->private_data;
	void __user *uarg = (void __user *)arg;
	u64 args[DXG_IOCTL_ARG_MAX / sizeof(u64)];
	const struct dxg_ioctl *ioc;
	unsigned int nr = _IOC_NR(cmd);
	unsigned int size;
	long ret;

	if (_IOC_TYPE(cmd) != 0x47 || nr >= ARRAY_SIZE(dxg_ioctls) ||
	    !dxg_ioctls[nr].fn)
		return -ENOTTY;
	ioc = &dxg_ioctls[nr];
	/* The size field must be the struct's (and the direction _IOWR). */
	if (cmd != ioc->cmd)
		return -EINVAL;
	/* The device is gone: nothing a handle names exists any more. */
	if (READ_ONCE(proc->dxg->removed))
		return -ENODEV;
	/* Handles are per process: an inherited file is not the child's. */
	if (task_tgid(current) != proc->tgid)
		return -EPERM;
	/*
	 * An earlier asynchronous submission's failure is this call's
	 * result, and this call is not made. Anything but another submission
	 * first waits until the host has taken them all.
	 */
	if (nr == _IOC_NR(LX_DXSUBMITCOMMAND) ||
	    nr == _IOC_NR(LX_DXSUBMITCOMMANDTOHWQUEUE) ||
	    nr == _IOC_NR(LX_DXSIGNALSYNCHRONIZATIONOBJECTFROMGPU) ||
	    nr == _IOC_NR(LX_DXSIGNALSYNCHRONIZATIONOBJECTFROMGPU2))
		ret = dxgvm_async_error(proc->async);
	else
		ret = dxgvm_async_settle(proc->dxg, proc->async,
					 DXGVM_WAIT_KILLABLE);
	if (ret)
		return ret;
	size = _IOC_SIZE(cmd);
	/*
	 * Writing the struct back unchanged first finds a read-only
	 * argument before anything is created on the host.
	 */
	if (copy_from_user(args, uarg, size) || copy_to_user(uarg, args, size))
		return -EFAULT;
	ret = ioc->fn(proc, file, args);
	if (ret < 0) {
		pr_debug("%s: %ld\n", ioc->name, ret);
		return ret;
	}
	if (copy_to_user(uarg, args, size)) {
		if (ioc->undo)
			ioc->undo(proc, args);
		return -EFAULT;
	}
	return ret;
}
