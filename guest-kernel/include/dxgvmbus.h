/* SPDX-License-Identifier: GPL-2.0 */
/*
 * dxvmm: the GPU-PV messages between the guest driver and the host device.
 *
 * Command numbers, headers and payloads follow WSL 2's dxgkrnl
 * (drivers/hv/dxgkrnl/dxgvmbus.h); the framing that carries them over the
 * two virtio queues is dxvmm's. Only the commands dxvmm implements have
 * payload structs here. The Rust twins are protocol/src/vmbus.rs and
 * protocol/src/frame.rs; both assert the same sizes and offsets, and
 * docs/protocol.md has the byte tables.
 *
 * Variable-length tails follow each fixed part directly: a message is
 * exactly sizeof(fixed part) + tails. The fixed parts that end 4 bytes past
 * a 64-bit boundary are DXGVMB_PACKED4 so that sizeof() is where the tail
 * starts (dxgkrnl declares a one-element array there instead).
 */
#ifndef _DXGVMBUS_H
#define _DXGVMBUS_H

#include <linux/types.h>
#include "uapi/misc/d3dkmthk.h"

#define DXGVMB_PACKED4 __attribute__((packed, aligned(4)))

/* ---- virtio framing ------------------------------------------------------ */

#define VIRTIO_ID_DXG			61
#define DXGV_REQUEST_QUEUE		0
#define DXGV_EVENT_QUEUE		1
#define DXGV_FRAME_MAGIC		0x56475844u	/* "DXGV" */
#define DXGV_FRAME_VERSION		1
#define DXGV_FRAME_FLAG_REPLY		(1u << 0)
#define DXGV_FRAME_FLAG_EVENT		(1u << 1)
#define DXG_MAX_VM_BUS_PACKET_SIZE	(1024 * 128)
#define DXGV_MAX_ADAPTERS		16
#define DXGV_HOSTCAP_MAP_GUEST_MEMORY	(1u << 0)
#define DXGV_HOSTCAP_ASYNC_MSG		(1u << 1)

struct dxgv_frame_header {
	__u32			magic;
	__u16			version;
	__u16			flags;		/* DXGV_FRAME_FLAG_* */
	__u64			request_id;	/* echoed in the reply */
	__u32			payload_len;
	struct ntstatus		status;		/* replies: dispatch result */
	struct winluid		vgpu_luid;	/* adapter of a vGPU command */
};

struct dxgv_config {
	__u32			magic;
	__u16			frame_version;
	__u16			num_adapters;
	__u32			vmbus_interface_version;
	__u32			vmbus_last_compatible_interface_version;
	__u32			host_caps;	/* DXGV_HOSTCAP_* */
	__u32			max_payload;
	struct winluid		adapter_luids[DXGV_MAX_ADAPTERS];
};

/* ---- versions, channels, command numbers --------------------------------- */

#define DXGK_VMBUS_INTERFACE_VERSION			40
#define DXGK_VMBUS_LAST_COMPATIBLE_INTERFACE_VERSION	16
#define DXG_VM_PROCESS_NAME_LENGTH			260
#define WIN_MAX_PATH					260

enum dxgkvmb_commandchanneltype {
	DXGKVMB_VGPU_TO_HOST,
	DXGKVMB_VM_TO_HOST,
	DXGKVMB_HOST_TO_VM
};

enum dxgkvmb_commandtype_global {
	DXGK_VMBCOMMAND_VM_TO_HOST_FIRST	= 1000,
	DXGK_VMBCOMMAND_CREATEPROCESS		= 1000,
	DXGK_VMBCOMMAND_DESTROYPROCESS		= 1001,
	DXGK_VMBCOMMAND_OPENSYNCOBJECT		= 1002,
	DXGK_VMBCOMMAND_DESTROYSYNCOBJECT	= 1003,
	DXGK_VMBCOMMAND_CREATENTSHAREDOBJECT	= 1004,
	DXGK_VMBCOMMAND_DESTROYNTSHAREDOBJECT	= 1005,
	DXGK_VMBCOMMAND_SIGNALFENCE		= 1006,
	DXGK_VMBCOMMAND_NOTIFYPROCESSFREEZE	= 1007,
	DXGK_VMBCOMMAND_NOTIFYPROCESSTHAW	= 1008,
	DXGK_VMBCOMMAND_QUERYETWSESSION		= 1009,
	DXGK_VMBCOMMAND_SETIOSPACEREGION	= 1010,
	DXGK_VMBCOMMAND_COMPLETETRANSACTION	= 1011,
	DXGK_VMBCOMMAND_SHAREOBJECTWITHHOST	= 1021,
	DXGK_VMBCOMMAND_ISFEATUREENABLED_GLOBAL	= 1022,
	DXGK_VMBCOMMAND_INVALID_VM_TO_HOST
};

enum dxgkvmb_commandtype {
	DXGK_VMBCOMMAND_CREATEDEVICE		= 0,
	DXGK_VMBCOMMAND_DESTROYDEVICE		= 1,
	DXGK_VMBCOMMAND_QUERYADAPTERINFO	= 2,
	DXGK_VMBCOMMAND_DDIQUERYADAPTERINFO	= 3,
	DXGK_VMBCOMMAND_CREATEALLOCATION	= 4,
	DXGK_VMBCOMMAND_DESTROYALLOCATION	= 5,
	DXGK_VMBCOMMAND_CREATECONTEXTVIRTUAL	= 6,
	DXGK_VMBCOMMAND_DESTROYCONTEXT		= 7,
	DXGK_VMBCOMMAND_CREATESYNCOBJECT	= 8,
	DXGK_VMBCOMMAND_CREATEPAGINGQUEUE	= 9,
	DXGK_VMBCOMMAND_DESTROYPAGINGQUEUE	= 10,
	DXGK_VMBCOMMAND_MAKERESIDENT		= 11,
	DXGK_VMBCOMMAND_EVICT			= 12,
	DXGK_VMBCOMMAND_ESCAPE			= 13,
	DXGK_VMBCOMMAND_OPENADAPTER		= 14,
	DXGK_VMBCOMMAND_CLOSEADAPTER		= 15,
	DXGK_VMBCOMMAND_FREEGPUVIRTUALADDRESS	= 16,
	DXGK_VMBCOMMAND_MAPGPUVIRTUALADDRESS	= 17,
	DXGK_VMBCOMMAND_RESERVEGPUVIRTUALADDRESS = 18,
	DXGK_VMBCOMMAND_UPDATEGPUVIRTUALADDRESS	= 19,
	DXGK_VMBCOMMAND_SUBMITCOMMAND		= 20,
	DXGK_VMBCOMMAND_QUERYVIDEOMEMORYINFO	= 21,
	DXGK_VMBCOMMAND_WAITFORSYNCOBJECTFROMCPU = 22,
	DXGK_VMBCOMMAND_LOCK2			= 23,
	DXGK_VMBCOMMAND_UNLOCK2			= 24,
	DXGK_VMBCOMMAND_WAITFORSYNCOBJECTFROMGPU = 25,
	DXGK_VMBCOMMAND_SIGNALSYNCOBJECT	= 26,
	DXGK_VMBCOMMAND_SIGNALFENCENTSHAREDBYREF = 27,
	DXGK_VMBCOMMAND_GETDEVICESTATE		= 28,
	DXGK_VMBCOMMAND_MARKDEVICEASERROR	= 29,
	DXGK_VMBCOMMAND_ADAPTERSTOP		= 30,
	DXGK_VMBCOMMAND_SETQUEUEDLIMIT		= 31,
	DXGK_VMBCOMMAND_OPENRESOURCE		= 32,
	DXGK_VMBCOMMAND_SETCONTEXTSCHEDULINGPRIORITY = 33,
	DXGK_VMBCOMMAND_PRESENTHISTORYTOKEN	= 34,
	DXGK_VMBCOMMAND_SETREDIRECTEDFLIPFENCEVALUE = 35,
	DXGK_VMBCOMMAND_GETINTERNALADAPTERINFO	= 36,
	DXGK_VMBCOMMAND_FLUSHHEAPTRANSITIONS	= 37,
	DXGK_VMBCOMMAND_BLT			= 38,
	DXGK_VMBCOMMAND_DDIGETSTANDARDALLOCATIONDRIVERDATA = 39,
	DXGK_VMBCOMMAND_CDDGDICOMMAND		= 40,
	DXGK_VMBCOMMAND_QUERYALLOCATIONRESIDENCY = 41,
	DXGK_VMBCOMMAND_FLUSHDEVICE		= 42,
	DXGK_VMBCOMMAND_FLUSHADAPTER		= 43,
	DXGK_VMBCOMMAND_DDIGETNODEMETADATA	= 44,
	DXGK_VMBCOMMAND_SETEXISTINGSYSMEMSTORE	= 45,
	DXGK_VMBCOMMAND_ISSYNCOBJECTSIGNALED	= 46,
	DXGK_VMBCOMMAND_CDDSYNCGPUACCESS	= 47,
	DXGK_VMBCOMMAND_QUERYSTATISTICS		= 48,
	DXGK_VMBCOMMAND_CHANGEVIDEOMEMORYRESERVATION = 49,
	DXGK_VMBCOMMAND_CREATEHWQUEUE		= 50,
	DXGK_VMBCOMMAND_DESTROYHWQUEUE		= 51,
	DXGK_VMBCOMMAND_SUBMITCOMMANDTOHWQUEUE	= 52,
	DXGK_VMBCOMMAND_GETDRIVERSTOREFILE	= 53,
	DXGK_VMBCOMMAND_READDRIVERSTOREFILE	= 54,
	DXGK_VMBCOMMAND_GETNEXTHARDLINK		= 55,
	DXGK_VMBCOMMAND_UPDATEALLOCATIONPROPERTY = 56,
	DXGK_VMBCOMMAND_OFFERALLOCATIONS	= 57,
	DXGK_VMBCOMMAND_RECLAIMALLOCATIONS	= 58,
	DXGK_VMBCOMMAND_SETALLOCATIONPRIORITY	= 59,
	DXGK_VMBCOMMAND_GETALLOCATIONPRIORITY	= 60,
	DXGK_VMBCOMMAND_GETCONTEXTSCHEDULINGPRIORITY = 61,
	DXGK_VMBCOMMAND_QUERYCLOCKCALIBRATION	= 62,
	DXGK_VMBCOMMAND_QUERYRESOURCEINFO	= 64,
	DXGK_VMBCOMMAND_LOGEVENT		= 65,
	DXGK_VMBCOMMAND_SETEXISTINGSYSMEMPAGES	= 66,
	DXGK_VMBCOMMAND_INVALIDATECACHE		= 67,
	DXGK_VMBCOMMAND_ISFEATUREENABLED	= 68,
	DXGK_VMBCOMMAND_INVALID
};

enum dxgkvmb_commandtype_host_to_vm {
	DXGK_VMBCOMMAND_SIGNALGUESTEVENT,
	DXGK_VMBCOMMAND_PROPAGATEPRESENTHISTORYTOKEN,
	DXGK_VMBCOMMAND_SETGUESTDATA,
	DXGK_VMBCOMMAND_SIGNALGUESTEVENTPASSIVE,
	DXGK_VMBCOMMAND_SENDWNFNOTIFICATION,
	DXGK_VMBCOMMAND_INVALID_HOST_TO_VM
};

/* ---- headers ------------------------------------------------------------- */

struct dxgkvmb_command_vm_to_host {
	__u64				command_id;
	struct d3dkmthandle		process;
	enum dxgkvmb_commandchanneltype	channel_type;
	enum dxgkvmb_commandtype_global	command_type;
};

struct dxgkvmb_command_vgpu_to_host {
	__u64				command_id;
	struct d3dkmthandle		process;
	__u32				channel_type	: 8;
	__u32				async_msg	: 1;
	__u32				reserved	: 23;
	enum dxgkvmb_commandtype	command_type;
};

struct dxgkvmb_command_host_to_vm {
	__u64					command_id;
	struct d3dkmthandle			process;
	__u32					channel_type	: 8;
	__u32					async_msg	: 1;
	__u32					reserved	: 23;
	enum dxgkvmb_commandtype_host_to_vm	command_type;
};

/* ---- global channel -------------------------------------------------------- */

struct dxgkvmb_command_createprocess {
	struct dxgkvmb_command_vm_to_host hdr;
	__u64		process;
	__u64		process_id;
	__u16		process_name[DXG_VM_PROCESS_NAME_LENGTH + 1];
	__u8		csrss_process	: 1;
	__u8		dwm_process	: 1;
	__u8		wow64_process	: 1;
	__u8		linux_process	: 1;
};

struct dxgkvmb_command_createprocess_return {
	struct d3dkmthandle	hprocess;
};

struct dxgkvmb_command_destroyprocess {		/* returns ntstatus */
	struct dxgkvmb_command_vm_to_host hdr;
};

struct dxgkvmb_command_opensyncobject {
	struct dxgkvmb_command_vm_to_host hdr;
	struct d3dkmthandle	device;
	struct d3dkmthandle	global_sync_object;
	__u32			engine_affinity;
	struct d3dddi_synchronizationobject_flags flags;
};

struct dxgkvmb_command_opensyncobject_return {
	struct d3dkmthandle	sync_object;
	struct ntstatus		status;
	__u64			gpu_virtual_address;
	__u64			guest_cpu_physical_address;
};

struct dxgkvmb_command_destroysyncobject {	/* returns ntstatus */
	struct dxgkvmb_command_vm_to_host hdr;
	struct d3dkmthandle	sync_object;
};

struct dxgkvmb_command_setiospaceregion {	/* returns ntstatus */
	struct dxgkvmb_command_vm_to_host hdr;
	__u64			start;
	__u64			length;
	__u32			shared_page_gpadl;
};

/* ---- adapters --------------------------------------------------------------- */

struct dxgkvmb_command_openadapter {
	struct dxgkvmb_command_vgpu_to_host hdr;
	__u32			vmbus_interface_version;
	__u32			vmbus_last_compatible_interface_version;
	struct winluid		guest_adapter_luid;
};

struct dxgkvmb_command_openadapter_return {
	struct d3dkmthandle	host_adapter_handle;
	struct ntstatus		status;
	__u32			vmbus_interface_version;
	__u32			vmbus_last_compatible_interface_version;
};

struct dxgkvmb_command_closeadapter {		/* no reply payload */
	struct dxgkvmb_command_vgpu_to_host hdr;
	struct d3dkmthandle	host_handle;
};

struct dxgkvmb_command_getinternaladapterinfo {
	struct dxgkvmb_command_vgpu_to_host hdr;
};

struct dxgkvmb_command_getinternaladapterinfo_return {
	__u32			device_types;
	__u32			driver_store_copy_mode;
	__u32			driver_ddi_version;
	__u32			secure_virtual_machine	: 1;
	__u32			virtual_machine_reset	: 1;
	__u32			is_vail_supported	: 1;
	__u32			hw_sch_enabled		: 1;
	__u32			hw_sch_capable		: 1;
	__u32			va_backed_vm		: 1;
	__u32			async_msg_enabled	: 1;
	__u32			hw_support_state	: 2;
	__u32			reserved		: 23;
	struct winluid		host_adapter_luid;
	__u16			device_description[80];
	__u16			device_instance_id[WIN_MAX_PATH];
	struct winluid		host_vgpu_luid;
};

/* + private_data_size bytes; reply: ntstatus + private_data_size bytes */
struct dxgkvmb_command_queryadapterinfo {
	struct dxgkvmb_command_vgpu_to_host hdr;
	enum kmtqueryadapterinfotype	query_type;
	__u32				private_data_size;
};

struct dxgkvmb_command_queryvideomemoryinfo {
	struct dxgkvmb_command_vgpu_to_host hdr;
	struct d3dkmthandle		adapter;
	enum d3dkmt_memory_segment_group memory_segment_group;
	__u32				physical_adapter_index;
};

struct dxgkvmb_command_queryvideomemoryinfo_return {
	__u64	budget;
	__u64	current_usage;
	__u64	current_reservation;
	__u64	available_for_reservation;
};

/* ---- devices, contexts, queues ----------------------------------------------- */

struct dxgkvmb_command_createdevice {
	struct dxgkvmb_command_vgpu_to_host hdr;
	struct d3dkmt_createdeviceflags	flags;
	__u8				cdd_device;
	__u64				error_code;
};

struct dxgkvmb_command_createdevice_return {
	struct d3dkmthandle	device;
};

struct dxgkvmb_command_destroydevice {		/* returns ntstatus */
	struct dxgkvmb_command_vgpu_to_host hdr;
	struct d3dkmthandle	device;
};

struct dxgkvmb_command_flushdevice {		/* returns ntstatus */
	struct dxgkvmb_command_vgpu_to_host hdr;
	struct d3dkmthandle	device;
	__u32			reason;
};

/* + priv_drv_data_size bytes; the reply echoes the whole message */
struct dxgkvmb_command_createcontextvirtual {
	struct dxgkvmb_command_vgpu_to_host hdr;
	struct d3dkmthandle		context;
	struct d3dkmthandle		device;
	__u32				node_ordinal;
	__u32				engine_affinity;
	struct d3dddi_createcontextflags flags;
	enum d3dkmt_clienthint		client_hint;
	__u32				priv_drv_data_size;
} DXGVMB_PACKED4;

struct dxgkvmb_command_destroycontext {		/* returns ntstatus */
	struct dxgkvmb_command_vgpu_to_host hdr;
	struct d3dkmthandle	context;
};

/* + priv_drv_data_size bytes; the reply echoes the whole message */
struct dxgkvmb_command_createhwqueue {
	struct dxgkvmb_command_vgpu_to_host hdr;
	struct ntstatus			status;
	struct d3dkmthandle		hwqueue;
	struct d3dkmthandle		hwqueue_progress_fence;
	__u32				pad0;
	__u64				hwqueue_progress_fence_cpuva;
	__u64				hwqueue_progress_fence_gpuva;
	struct d3dkmthandle		context;
	struct d3dddi_createhwqueueflags flags;
	__u32				priv_drv_data_size;
} DXGVMB_PACKED4;

struct dxgkvmb_command_destroyhwqueue {		/* returns ntstatus */
	struct dxgkvmb_command_vgpu_to_host hdr;
	struct d3dkmthandle	hwqueue;
};

struct dxgkvmb_command_createpagingqueue {
	struct dxgkvmb_command_vgpu_to_host hdr;
	struct d3dkmt_createpagingqueue	args;
};

struct dxgkvmb_command_createpagingqueue_return {
	struct d3dkmthandle	paging_queue;
	struct d3dkmthandle	sync_object;
	__u64			fence_storage_physical_address;
	__u64			fence_storage_offset;
};

struct dxgkvmb_command_destroypagingqueue {	/* returns ntstatus */
	struct dxgkvmb_command_vgpu_to_host hdr;
	struct d3dkmthandle	paging_queue;
};

struct dxgkvmb_command_getdevicestate {
	struct dxgkvmb_command_vgpu_to_host hdr;
	struct d3dkmt_getdevicestate	args;
};

struct dxgkvmb_command_getdevicestate_return {
	struct d3dkmt_getdevicestate	args;
	struct ntstatus			status;
};

/* ---- allocations --------------------------------------------------------------- */

/*
 * + alloc_count struct dxgkvmb_command_createallocation_allocinfo,
 *   private_runtime_data_size bytes, priv_drv_data_size bytes, and each
 *   allocation's priv_drv_data_size bytes.
 */
struct dxgkvmb_command_createallocation {
	struct dxgkvmb_command_vgpu_to_host hdr;
	struct d3dkmthandle		device;
	struct d3dkmthandle		resource;
	__u32				private_runtime_data_size;
	__u32				priv_drv_data_size;
	__u32				alloc_count;
	struct d3dkmt_createallocationflags flags;
	__u64				private_runtime_resource_handle;
	__u8				make_resident;
};

struct dxgkvmb_command_createallocation_allocinfo {
	__u32	flags;
	__u32	priv_drv_data_size;
	__u32	vidpn_source_id;
};

struct d3dddi_rational {
	__u32	numerator;
	__u32	denominator;
};

struct dxgkarg_describeallocation {
	__u64			allocation;
	__u32			width;
	__u32			height;
	__u32			format;
	__u32			multisample_method;
	struct d3dddi_rational	refresh_rate;
	__u32			private_driver_attribute;
	__u32			flags;
	__u32			rotation;
};

struct dxgkvmb_command_allocinfo_return {
	struct d3dkmthandle		allocation;
	__u32				priv_drv_data_size;
	__u32				allocation_flags;	/* dxgkvmb_allocflags */
	__u64				allocation_size;
	struct dxgkarg_describeallocation driver_info;
};

/* + alloc_count allocinfo_return, then each allocation's private data */
struct dxgkvmb_command_createallocation_return {
	struct d3dkmt_createallocationflags flags;
	struct d3dkmthandle		resource;
	struct d3dkmthandle		global_share;
	__u32				vgpu_flags;
};

/* + num_pages __u64 guest page frame numbers; returns ntstatus */
struct dxgkvmb_command_setexistingsysmempages {
	struct dxgkvmb_command_vgpu_to_host hdr;
	struct d3dkmthandle	device;
	struct d3dkmthandle	allocation;
	__u32			num_pages;
	__u32			alloc_offset_in_pages;
};

/* + alloc_count handles; returns ntstatus */
struct dxgkvmb_command_destroyallocation {
	struct dxgkvmb_command_vgpu_to_host hdr;
	struct d3dkmthandle			device;
	struct d3dkmthandle			resource;
	__u32					alloc_count;
	struct d3dddicb_destroyallocation2flags	flags;
};

/* + alloc_count handles */
struct dxgkvmb_command_makeresident {
	struct dxgkvmb_command_vgpu_to_host hdr;
	struct d3dkmthandle		device;
	struct d3dkmthandle		paging_queue;
	struct d3dddi_makeresident_flags flags;
	__u32				alloc_count;
};

struct dxgkvmb_command_makeresident_return {
	__u64		paging_fence_value;
	__u64		num_bytes_to_trim;
	struct ntstatus	status;
};

/* + alloc_count handles */
struct dxgkvmb_command_evict {
	struct dxgkvmb_command_vgpu_to_host hdr;
	struct d3dkmthandle		device;
	struct d3dddi_evict_flags	flags;
	__u32				alloc_count;
} DXGVMB_PACKED4;

struct dxgkvmb_command_evict_return {
	__u64	num_bytes_to_trim;
};

/* + args.allocation_count handles; reply: ntstatus + that many __u32 */
struct dxgkvmb_command_queryallocationresidency {
	struct dxgkvmb_command_vgpu_to_host	hdr;
	struct d3dkmt_queryallocationresidency	args;
};

/* + allocation_count handles; reply: ntstatus + max(count, 1) __u32 */
struct dxgkvmb_command_getallocationpriority {
	struct dxgkvmb_command_vgpu_to_host hdr;
	struct d3dkmthandle	device;
	struct d3dkmthandle	resource;
	__u32			allocation_count;
} DXGVMB_PACKED4;

/* + allocation_count handles + max(count, 1) __u32; returns ntstatus */
struct dxgkvmb_command_setallocationpriority {
	struct dxgkvmb_command_vgpu_to_host hdr;
	struct d3dkmthandle	device;
	struct d3dkmthandle	resource;
	__u32			allocation_count;
} DXGVMB_PACKED4;

struct dxgkvmb_command_lock2 {
	struct dxgkvmb_command_vgpu_to_host hdr;
	struct d3dkmt_lock2	args;
	__u8			use_legacy_lock;
	__u32			flags;
	__u32			priv_drv_data;
};

struct dxgkvmb_command_lock2_return {
	struct ntstatus	status;
	__u64		cpu_visible_buffer_offset;
};

struct dxgkvmb_command_unlock2 {		/* returns ntstatus */
	struct dxgkvmb_command_vgpu_to_host hdr;
	struct d3dkmt_unlock2	args;
	__u8			use_legacy_unlock;
};

/* ---- GPU virtual addresses --------------------------------------------------------- */

struct dxgkvmb_command_reservegpuvirtualaddress {
	struct dxgkvmb_command_vgpu_to_host	hdr;
	struct d3dddi_reservegpuvirtualaddress	args;
};

struct dxgkvmb_command_reservegpuvirtualaddress_return {
	__u64	virtual_address;
	__u64	paging_fence_value;
};

struct dxgkvmb_command_mapgpuvirtualaddress {
	struct dxgkvmb_command_vgpu_to_host	hdr;
	struct d3dddi_mapgpuvirtualaddress	args;
	struct d3dkmthandle			device;
};

struct dxgkvmb_command_mapgpuvirtualaddress_return {
	__u64		virtual_address;
	__u64		paging_fence_value;
	struct ntstatus	status;
};

struct dxgkvmb_command_freegpuvirtualaddress {	/* returns ntstatus */
	struct dxgkvmb_command_vgpu_to_host	hdr;
	struct d3dkmt_freegpuvirtualaddress	args;
};

/* ---- synchronisation objects -------------------------------------------------------- */

struct dxgkvmb_command_createsyncobject {
	struct dxgkvmb_command_vgpu_to_host		hdr;
	struct d3dkmt_createsynchronizationobject2	args;
	__u32						client_hint;
};

struct dxgkvmb_command_createsyncobject_return {
	struct d3dkmthandle	sync_object;
	struct d3dkmthandle	global_sync_object;
	__u64			fence_gpu_va;
	__u64			fence_storage_address;
	__u32			fence_storage_offset;
};

/*
 * + object_count handles, context_count context handles, and either nothing
 * or object_count __u64 fence values; returns ntstatus unless async_msg.
 */
struct dxgkvmb_command_signalsyncobject {
	struct dxgkvmb_command_vgpu_to_host hdr;
	__u32				object_count;
	struct d3dddicb_signalflags	flags;
	__u32				context_count;
	__u64				fence_value;
	union {
		__u64			cpu_event_handle;
		struct d3dkmthandle	device;
	};
};

/* + object_count handles + object_count __u64 fence values; ntstatus */
struct dxgkvmb_command_waitforsyncobjectfromcpu {
	struct dxgkvmb_command_vgpu_to_host hdr;
	struct d3dkmthandle	device;
	__u32			object_count;
	struct d3dddi_waitforsynchronizationobjectfromcpu_flags flags;
	__u64			guest_event_pointer;
	__u8			dereference_event;
};

/* + object_count __u64 fence values, then object_count handles; ntstatus */
struct dxgkvmb_command_waitforsyncobjectfromgpu {
	struct dxgkvmb_command_vgpu_to_host hdr;
	struct d3dkmthandle	context;
	__u32			object_count;
	__u8			legacy_fence_object;
};

/* ---- submission and escapes ---------------------------------------------------------- */

/* + num_history_buffers handles + priv_drv_data_size bytes; ntstatus */
struct dxgkvmb_command_submitcommand {
	struct dxgkvmb_command_vgpu_to_host hdr;
	struct d3dkmt_submitcommand	args;
};

/* + num_primaries handles + priv_drv_data_size bytes; ntstatus */
struct dxgkvmb_command_submitcommandtohwqueue {
	struct dxgkvmb_command_vgpu_to_host	hdr;
	struct d3dkmt_submitcommandtohwqueue	args;
};

/* + priv_drv_data_size bytes; the reply is the private data only */
struct dxgkvmb_command_escape {
	struct dxgkvmb_command_vgpu_to_host hdr;
	struct d3dkmthandle		adapter;
	struct d3dkmthandle		device;
	enum d3dkmt_escapetype		type;
	struct d3dddi_escapeflags	flags;
	__u32				priv_drv_data_size;
	struct d3dkmthandle		context;
};

/* ---- host to guest ---------------------------------------------------------------------- */

struct dxgkvmb_command_signalguestevent {
	struct dxgkvmb_command_host_to_vm hdr;
	__u64		event;
	__u64		process_id;
	__u8		dereference_event;
};

struct dxgkvmb_command_setguestdata {
	struct dxgkvmb_command_host_to_vm hdr;
	__u64		guest_pointer;
	union {
		__u64	data64;
		__u32	data32;
	};
	__u32		dereference	: 1;
	__u32		data_type	: 4;
};

/* ---- layout checks (the same numbers as protocol/src/vmbus.rs) ------------------------- */

#define DXGVMB_ASSERT_SIZE(t, n) _Static_assert(sizeof(struct t) == (n), #t " size")
#define DXGVMB_ASSERT_OFF(t, f, n) \
	_Static_assert(offsetof(struct t, f) == (n), #t "." #f " offset")

DXGVMB_ASSERT_SIZE(dxgv_frame_header, 32);
DXGVMB_ASSERT_OFF(dxgv_frame_header, vgpu_luid, 24);
DXGVMB_ASSERT_SIZE(dxgv_config, 152);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_vm_to_host, 24);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_vgpu_to_host, 24);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_host_to_vm, 24);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_createprocess, 568);
DXGVMB_ASSERT_OFF(dxgkvmb_command_createprocess, process_name, 40);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_opensyncobject, 40);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_opensyncobject_return, 24);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_destroysyncobject, 32);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_setiospaceregion, 48);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_openadapter, 40);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_openadapter_return, 16);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_closeadapter, 32);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_getinternaladapterinfo_return, 712);
DXGVMB_ASSERT_OFF(dxgkvmb_command_getinternaladapterinfo_return, host_vgpu_luid, 704);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_queryadapterinfo, 32);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_queryvideomemoryinfo, 40);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_queryvideomemoryinfo_return, 32);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_createdevice, 40);
DXGVMB_ASSERT_OFF(dxgkvmb_command_createdevice, error_code, 32);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_destroydevice, 32);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_flushdevice, 32);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_createcontextvirtual, 52);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_destroycontext, 32);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_createhwqueue, 68);
DXGVMB_ASSERT_OFF(dxgkvmb_command_createhwqueue, hwqueue_progress_fence_cpuva, 40);
DXGVMB_ASSERT_OFF(dxgkvmb_command_createhwqueue, context, 56);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_destroyhwqueue, 32);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_createpagingqueue, 56);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_createpagingqueue_return, 24);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_destroypagingqueue, 32);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_getdevicestate, 80);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_getdevicestate_return, 64);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_createallocation, 64);
DXGVMB_ASSERT_OFF(dxgkvmb_command_createallocation, make_resident, 56);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_createallocation_allocinfo, 12);
DXGVMB_ASSERT_SIZE(dxgkarg_describeallocation, 48);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_allocinfo_return, 72);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_createallocation_return, 16);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_setexistingsysmempages, 40);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_destroyallocation, 40);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_makeresident, 40);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_makeresident_return, 24);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_evict, 36);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_queryallocationresidency, 56);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_getallocationpriority, 36);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_setallocationpriority, 36);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_lock2, 64);
DXGVMB_ASSERT_OFF(dxgkvmb_command_lock2, flags, 52);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_lock2_return, 16);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_unlock2, 40);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_reservegpuvirtualaddress, 96);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_mapgpuvirtualaddress, 136);
DXGVMB_ASSERT_OFF(dxgkvmb_command_mapgpuvirtualaddress, device, 128);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_mapgpuvirtualaddress_return, 24);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_freegpuvirtualaddress, 48);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_createsyncobject, 128);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_createsyncobject_return, 32);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_signalsyncobject, 56);
DXGVMB_ASSERT_OFF(dxgkvmb_command_signalsyncobject, fence_value, 40);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_waitforsyncobjectfromcpu, 56);
DXGVMB_ASSERT_OFF(dxgkvmb_command_waitforsyncobjectfromcpu, guest_event_pointer, 40);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_waitforsyncobjectfromgpu, 40);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_submitcommand, 408);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_submitcommandtohwqueue, 80);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_escape, 48);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_signalguestevent, 48);
DXGVMB_ASSERT_SIZE(dxgkvmb_command_setguestdata, 48);

#endif /* _DXGVMBUS_H */
