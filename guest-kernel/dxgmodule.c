// SPDX-License-Identifier: GPL-2.0
/*
 * dxgkrnl for dxvmm: the virtio driver and /dev/dxg.
 *
 * Probe reads the config space, opens every adapter the host lists
 * (OPENADAPTER, GETINTERNALADAPTERINFO), sends SETIOSPACEREGION and then
 * registers /dev/dxg. Remove unregisters it, closes the adapters, resets
 * the device and fails whatever is still waiting with -ENODEV; files that
 * stay open keep the driver state alive until they are released.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/fs.h>
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>

#include "dxgkrnl.h"

unsigned int dxg_request_timeout_ms = 15000;
module_param_named(request_timeout_ms, dxg_request_timeout_ms, uint, 0644);
MODULE_PARM_DESC(request_timeout_ms,
		 "How long a request waits for the host's reply (ms)");

bool dxg_async_submit = true;
module_param_named(async_submit, dxg_async_submit, bool, 0644);
MODULE_PARM_DESC(async_submit,
		 "Send submissions without waiting for the host; a failure is returned by the process's next call (default on)");

/* /dev/dxg is one device: a second virtio-dxg device is not bound. */
static DEFINE_MUTEX(dxg_bind_lock);
static bool dxg_bound;

static void dxg_vdev_free(struct kref *ref)
{
	struct dxg_vdev *dxg = container_of(ref, struct dxg_vdev, ref);

	mutex_destroy(&dxg->proc_lock);
	kfree(dxg);
}

void dxg_vdev_put(struct dxg_vdev *dxg)
{
	kref_put(&dxg->ref, dxg_vdev_free);
}

static int dxg_open(struct inode *inode, struct file *file)
{
	/* misc_open() set private_data, and holds misc_mtx: no removal now. */
	struct miscdevice *misc = file->private_data;
	struct dxg_vdev *dxg = container_of(misc, struct dxg_vdev, misc);
	struct dxg_process *proc;

	proc = dxg_process_open(dxg);
	if (IS_ERR(proc))
		return PTR_ERR(proc);
	file->private_data = proc;
	return nonseekable_open(inode, file);
}

static int dxg_release(struct inode *inode, struct file *file)
{
	dxg_process_close(file->private_data);
	return 0;
}

static const struct file_operations dxg_fops = {
	.owner		= THIS_MODULE,
	.open		= dxg_open,
	.release	= dxg_release,
	.unlocked_ioctl	= dxg_ioctl,
	.mmap		= dxg_mmap,
	.llseek		= no_llseek,
};

/* Reads and checks the config space (docs/protocol.md §7). */
static int dxg_read_config(struct dxg_vdev *dxg, struct winluid *luids,
			   unsigned int *count)
{
	struct virtio_device *vdev = dxg->vdev;
	u32 magic, version, oldest, caps, max_payload;
	u16 frame_version, num_adapters;

	virtio_cread(vdev, struct dxgv_config, magic, &magic);
	virtio_cread(vdev, struct dxgv_config, frame_version, &frame_version);
	virtio_cread(vdev, struct dxgv_config, num_adapters, &num_adapters);
	virtio_cread(vdev, struct dxgv_config, vmbus_interface_version, &version);
	virtio_cread(vdev, struct dxgv_config,
		     vmbus_last_compatible_interface_version, &oldest);
	virtio_cread(vdev, struct dxgv_config, host_caps, &caps);
	virtio_cread(vdev, struct dxgv_config, max_payload, &max_payload);
	if (magic != DXGV_FRAME_MAGIC) {
		dev_err(&vdev->dev, "config magic %#x is not \"DXGV\"\n", magic);
		return -ENODEV;
	}
	if (frame_version != DXGV_FRAME_VERSION) {
		dev_err(&vdev->dev, "frame version %u is not supported (1 is)\n",
			frame_version);
		return -ENODEV;
	}
	if (num_adapters > DXGV_MAX_ADAPTERS) {
		dev_err(&vdev->dev, "%u adapters, at most %u supported\n",
			num_adapters, DXGV_MAX_ADAPTERS);
		return -ENODEV;
	}
	if (!max_payload || max_payload > DXG_MAX_VM_BUS_PACKET_SIZE)
		max_payload = DXG_MAX_VM_BUS_PACKET_SIZE;
	dxg->max_payload = max_payload;
	virtio_cread_bytes(vdev, offsetof(struct dxgv_config, adapter_luids),
			   luids, num_adapters * sizeof(*luids));
	*count = num_adapters;
	dev_info(&vdev->dev,
		 "host interface %u (oldest %u), caps %#x, %u adapter(s)\n",
		 version, oldest, caps, num_adapters);
	return 0;
}

/* OPENADAPTER and GETINTERNALADAPTERINFO for each LUID the host lists. */
static void dxg_open_adapters(struct dxg_vdev *dxg, const struct winluid *luids,
			      unsigned int count)
{
	struct device *dev = &dxg->vdev->dev;
	unsigned int i;
	int ret;

	for (i = 0; i < count; i++) {
		struct dxg_adapter *adapter = &dxg->adapters[dxg->num_adapters];

		memset(adapter, 0, sizeof(*adapter));
		adapter->dxg = dxg;
		adapter->luid = luids[i];
		ret = dxgvmb_open_adapter(adapter);
		if (ret) {
			dev_warn(dev, "adapter %08x-%08x: OPENADAPTER failed: %d\n",
				 luids[i].b, luids[i].a, ret);
			continue;
		}
		ret = dxgvmb_get_internal_adapter_info(adapter);
		if (ret) {
			dev_warn(dev, "adapter %08x-%08x: GETINTERNALADAPTERINFO failed: %d\n",
				 luids[i].b, luids[i].a, ret);
			dxgvmb_close_adapter(adapter);
			continue;
		}
		dev_info(dev, "adapter %08x-%08x: \"%s\", interface %u, host handle %#x\n",
			 adapter->luid.b, adapter->luid.a, adapter->description,
			 adapter->interface_version, adapter->host_handle.v);
		dxg->num_adapters++;
	}
}

static void dxg_close_adapters(struct dxg_vdev *dxg)
{
	unsigned int i;

	for (i = 0; i < dxg->num_adapters; i++) {
		/* A host that stopped answering will not answer the rest. */
		if (dxgvmb_close_adapter(&dxg->adapters[i]) == -ETIMEDOUT)
			break;
	}
}

static int dxg_probe(struct virtio_device *vdev)
{
	struct winluid luids[DXGV_MAX_ADAPTERS];
	struct dxg_vdev *dxg;
	unsigned int count;
	int ret;

	mutex_lock(&dxg_bind_lock);
	if (dxg_bound) {
		mutex_unlock(&dxg_bind_lock);
		dev_err(&vdev->dev, "/dev/dxg already has a device\n");
		return -EBUSY;
	}
	dxg_bound = true;
	mutex_unlock(&dxg_bind_lock);

	dxg = kzalloc(sizeof(*dxg), GFP_KERNEL);
	if (!dxg) {
		ret = -ENOMEM;
		goto err_unbind;
	}
	kref_init(&dxg->ref);
	dxg->vdev = vdev;
	spin_lock_init(&dxg->vq_lock);
	spin_lock_init(&dxg->evq_lock);
	INIT_LIST_HEAD(&dxg->pending);
	init_waitqueue_head(&dxg->ring_wait);
	atomic64_set(&dxg->next_request_id, 0);
	mutex_init(&dxg->proc_lock);
	INIT_LIST_HEAD(&dxg->processes);
	spin_lock_init(&dxg->waiter_lock);
	INIT_LIST_HEAD(&dxg->waiters);
	atomic64_set(&dxg->next_cookie, 0);
	vdev->priv = dxg;

	ret = dxg_read_config(dxg, luids, &count);
	if (ret)
		goto err_free;
	ret = dxgvm_init_queues(dxg);
	if (ret) {
		dev_err(&vdev->dev, "cannot set up the queues: %d\n", ret);
		goto err_free;
	}
	virtio_device_ready(vdev);
	virtqueue_kick(dxg->event_vq);

	dxg_open_adapters(dxg, luids, count);
	ret = dxgvmb_set_iospace_region(dxg);
	if (ret < 0)
		dev_warn(&vdev->dev, "SETIOSPACEREGION failed: %d\n", ret);

	dxg->misc.minor = MISC_DYNAMIC_MINOR;
	dxg->misc.name = "dxg";
	dxg->misc.fops = &dxg_fops;
	dxg->misc.mode = 0666;
	dxg->misc.parent = &vdev->dev;
	ret = misc_register(&dxg->misc);
	if (ret) {
		dev_err(&vdev->dev, "cannot register /dev/dxg: %d\n", ret);
		goto err_close;
	}
	dxg->misc_registered = true;
	dev_info(&vdev->dev, "/dev/dxg ready, %u adapter(s)\n",
		 dxg->num_adapters);
	return 0;

err_close:
	dxg_close_adapters(dxg);
	dxgvm_shutdown(dxg);
err_free:
	vdev->priv = NULL;
	dxg_vdev_put(dxg);
err_unbind:
	mutex_lock(&dxg_bind_lock);
	dxg_bound = false;
	mutex_unlock(&dxg_bind_lock);
	return ret;
}

static void dxg_remove(struct virtio_device *vdev)
{
	struct dxg_vdev *dxg = vdev->priv;

	/* No new opens; misc_deregister() waits for any open in progress. */
	if (dxg->misc_registered)
		misc_deregister(&dxg->misc);
	dxg_close_adapters(dxg);
	/* The reset also destroys the host processes of files still open. */
	dxgvm_shutdown(dxg);
	vdev->priv = NULL;
	dxg->vdev = NULL;
	dev_info(&vdev->dev, "removed\n");
	dxg_vdev_put(dxg);

	mutex_lock(&dxg_bind_lock);
	dxg_bound = false;
	mutex_unlock(&dxg_bind_lock);
}

static const struct virtio_device_id dxg_id_table[] = {
	{ VIRTIO_ID_DXG, VIRTIO_DEV_ANY_ID },
	{ 0 },
};
MODULE_DEVICE_TABLE(virtio, dxg_id_table);

static struct virtio_driver dxg_virtio_driver = {
	.driver.name	= KBUILD_MODNAME,
	.driver.owner	= THIS_MODULE,
	.id_table	= dxg_id_table,
	.probe		= dxg_probe,
	.remove		= dxg_remove,
};
module_virtio_driver(dxg_virtio_driver);

MODULE_DESCRIPTION("dxvmm GPU-PV guest driver: /dev/dxg over virtio");
MODULE_LICENSE("GPL");
