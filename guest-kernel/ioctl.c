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

#include <linux/fs.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/uaccess.h>

#include "dxgkrnl.h"

/* Room for the largest argument struct (d3dkmt_submitcommand, 384). */
#define DXG_IOCTL_ARG_MAX	512

typedef long (*dxg_ioctl_fn)(struct dxg_process *proc, void *args);
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

static long dxgk_open_adapter_from_luid(struct dxg_process *proc, void *p)
{
	struct d3dkmt_openadapterfromluid *args = p;
	struct dxg_adapter *adapter;

	adapter = dxg_find_adapter(proc->dxg, args->adapter_luid);
	if (!adapter)
		return -ENOENT;
	return dxg_process_add_adapter(proc, adapter, &args->adapter_handle);
}

static long dxgk_close_adapter(struct dxg_process *proc, void *p)
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

static long dxgk_enum_adapters2(struct dxg_process *proc, void *p)
{
	struct d3dkmt_enumadapters2 *args = p;

	return dxg_enum_adapters(proc, &args->num_adapters, args->adapters);
}

/*
 * The filter is not applied: every dxvmm adapter is compute-only, and a
 * caller that leaves include_compute_only clear would otherwise see none.
 */
static long dxgk_enum_adapters3(struct dxg_process *proc, void *p)
{
	struct d3dkmt_enumadapters3 *args = p;

	return dxg_enum_adapters(proc, &args->adapter_count, args->adapters);
}

static long dxgk_query_adapter_info(struct dxg_process *proc, void *p)
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

static long dxgk_query_video_memory_info(struct dxg_process *proc, void *p)
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

static long dxgk_create_device(struct dxg_process *proc, void *p)
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

static long dxgk_destroy_device(struct dxg_process *proc, void *p)
{
	struct d3dkmt_destroydevice *args = p;
	struct dxg_adapter *adapter;

	adapter = dxg_process_take_device(proc, args->device);
	if (!adapter)
		return -EBADF;
	return dxgvmb_destroy_device(proc, adapter, args->device);
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
 * Ioctls of WSL's table that are not here yet (contexts, allocations,
 * sync objects, submission, ...) get -ENOTTY until they are added.
 */
static const struct dxg_ioctl dxg_ioctls[] = {
	DXG_IOCTL(LX_DXOPENADAPTERFROMLUID, dxgk_open_adapter_from_luid),
	DXG_IOCTL_UNDO(LX_DXCREATEDEVICE, dxgk_create_device,
		       dxgk_create_device_undo),
	DXG_IOCTL(LX_DXQUERYADAPTERINFO, dxgk_query_adapter_info),
	DXG_IOCTL(LX_DXQUERYVIDEOMEMORYINFO, dxgk_query_video_memory_info),
	DXG_IOCTL(LX_DXENUMADAPTERS2, dxgk_enum_adapters2),
	DXG_IOCTL(LX_DXCLOSEADAPTER, dxgk_close_adapter),
	DXG_IOCTL(LX_DXDESTROYDEVICE, dxgk_destroy_device),
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
	size = _IOC_SIZE(cmd);
	/*
	 * Writing the struct back unchanged first finds a read-only
	 * argument before anything is created on the host.
	 */
	if (copy_from_user(args, uarg, size) || copy_to_user(uarg, args, size))
		return -EFAULT;
	ret = ioc->fn(proc, args);
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
