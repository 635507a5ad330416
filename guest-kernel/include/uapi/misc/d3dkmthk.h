/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * dxvmm: the /dev/dxg ioctl ABI.
 *
 * Struct, field and ioctl names and layouts follow WSL 2's
 * include/uapi/misc/d3dkmthk.h, so that user space written against that
 * header builds and runs unchanged in a dxvmm guest. Only the ioctls dxvmm
 * serves are declared. The Rust twin of this file is protocol/src/abi.rs;
 * both assert the same sizes and offsets.
 *
 * User-space pointers are __u64 in every struct (32- and 64-bit callers see
 * one layout); the kernel converts them with u64_to_user_ptr().
 */
#ifndef _UAPI_MISC_D3DKMTHK_H
#define _UAPI_MISC_D3DKMTHK_H

#include <linux/types.h>
#include <linux/ioctl.h>
#ifdef __KERNEL__
#include <linux/stddef.h>
#else
#include <stddef.h>
#endif

#define D3DKMT_ASSERT_SIZE(t, n) _Static_assert(sizeof(t) == (n), #t " size")
#define D3DKMT_ASSERT_OFF(t, f, n) \
	_Static_assert(offsetof(t, f) == (n), #t "." #f " offset")

/* A kernel object handle; opaque to user space. */
struct d3dkmthandle {
	union {
		struct {
			__u32 instance	: 6;
			__u32 index	: 24;
			__u32 unique	: 2;
		};
		__u32 v;
	};
};

/* A Windows NTSTATUS: negative is failure. */
struct ntstatus {
	union {
		struct {
			int code	: 16;
			int facility	: 13;
			int customer	: 1;
			int severity	: 2;
		};
		int v;
	};
};

struct winluid {
	__u32 a;
	__u32 b;
};

#define D3DDDI_MAX_WRITTEN_PRIMARIES		16
#define D3DKMT_CREATEALLOCATION_MAX		1024
#define D3DKMT_MAKERESIDENT_ALLOC_MAX		(1024 * 10)
#define D3DKMT_ADAPTERS_MAX			64
#define D3DDDI_MAX_BROADCAST_CONTEXT		64
#define D3DDDI_MAX_OBJECT_WAITED_ON		32
#define D3DDDI_MAX_OBJECT_SIGNALED		32

/* ---- adapters ---------------------------------------------------------- */

struct d3dkmt_adapterinfo {
	struct d3dkmthandle	adapter_handle;
	struct winluid		adapter_luid;
	__u32			num_sources;
	__u32			present_move_regions_preferred;
};

struct d3dkmt_enumadapters2 {
	__u32			num_adapters;
	__u32			reserved;
	__u64			adapters;	/* struct d3dkmt_adapterinfo * */
};

union d3dkmt_enumadapters_filter {
	struct {
		__u64	include_compute_only	: 1;
		__u64	include_display_only	: 1;
		__u64	reserved		: 62;
	};
	__u64	value;
};

struct d3dkmt_enumadapters3 {
	union d3dkmt_enumadapters_filter filter;
	__u32			adapter_count;
	__u32			reserved;
	__u64			adapters;	/* struct d3dkmt_adapterinfo * */
};

struct d3dkmt_closeadapter {
	struct d3dkmthandle	adapter_handle;
};

struct d3dkmt_openadapterfromluid {
	struct winluid		adapter_luid;
	struct d3dkmthandle	adapter_handle;
};

enum kmtqueryadapterinfotype {
	_KMTQAITYPE_UMDRIVERPRIVATE	= 0,
	_KMTQAITYPE_ADAPTERTYPE		= 15,
	_KMTQAITYPE_ADAPTERTYPE_RENDER	= 57
};

struct d3dkmt_adaptertype {
	union {
		struct {
			__u32	render_supported		: 1;
			__u32	display_supported		: 1;
			__u32	software_device			: 1;
			__u32	post_device			: 1;
			__u32	hybrid_discrete			: 1;
			__u32	hybrid_integrated		: 1;
			__u32	indirect_display_device		: 1;
			__u32	paravirtualized			: 1;
			__u32	acg_supported			: 1;
			__u32	support_set_timings_from_vidpn	: 1;
			__u32	detachable			: 1;
			__u32	compute_only			: 1;
			__u32	prototype			: 1;
			__u32	reserved			: 19;
		};
		__u32	value;
	};
};

struct d3dkmt_queryadapterinfo {
	struct d3dkmthandle		adapter;
	enum kmtqueryadapterinfotype	type;
	__u64				private_data;
	__u32				private_data_size;
};

enum d3dkmt_memory_segment_group {
	_D3DKMT_MEMORY_SEGMENT_GROUP_LOCAL	= 0,
	_D3DKMT_MEMORY_SEGMENT_GROUP_NON_LOCAL	= 1
};

struct d3dkmt_queryvideomemoryinfo {
	__u64				process;
	struct d3dkmthandle		adapter;
	enum d3dkmt_memory_segment_group memory_segment_group;
	__u64				budget;
	__u64				current_usage;
	__u64				current_reservation;
	__u64				available_for_reservation;
	__u32				physical_adapter_index;
};

/* ---- devices, contexts, queues ----------------------------------------- */

struct d3dkmt_createdeviceflags {
	__u32	legacy_mode		: 1;
	__u32	request_vSync		: 1;
	__u32	disable_gpu_timeout	: 1;
	__u32	reserved		: 29;
};

struct d3dkmt_createdevice {
	union {
		struct d3dkmthandle	adapter;
		__u64			adapter_pointer;
	};
	struct d3dkmt_createdeviceflags	flags;
	struct d3dkmthandle		device;
	__u64				command_buffer;
	__u32				command_buffer_size;
	__u32				reserved;
	__u64				allocation_list;
	__u32				allocation_list_size;
	__u32				reserved1;
	__u64				patch_location_list;
	__u32				patch_location_list_size;
	__u32				reserved2;
};

struct d3dkmt_destroydevice {
	struct d3dkmthandle	device;
};

enum d3dkmt_clienthint {
	_D3DKMT_CLIENTHNT_UNKNOWN	= 0,
	_D3DKMT_CLIENTHINT_OPENGL	= 1,
	_D3DKMT_CLIENTHINT_CDD		= 2,
	_D3DKMT_CLIENTHINT_DX7		= 7,
	_D3DKMT_CLIENTHINT_DX8		= 8,
	_D3DKMT_CLIENTHINT_DX9		= 9,
	_D3DKMT_CLIENTHINT_DX10		= 10,
};

struct d3dddi_createcontextflags {
	union {
		struct {
			__u32	null_rendering		: 1;
			__u32	initial_data		: 1;
			__u32	disable_gpu_timeout	: 1;
			__u32	synchronization_only	: 1;
			__u32	hw_queue_supported	: 1;
			__u32	reserved		: 27;
		};
		__u32	value;
	};
};

struct d3dkmt_createcontextvirtual {
	struct d3dkmthandle		device;
	__u32				node_ordinal;
	__u32				engine_affinity;
	struct d3dddi_createcontextflags flags;
	__u64				priv_drv_data;
	__u32				priv_drv_data_size;
	enum d3dkmt_clienthint		client_hint;
	struct d3dkmthandle		context;
};

struct d3dkmt_destroycontext {
	struct d3dkmthandle	context;
};

struct d3dddi_createhwqueueflags {
	union {
		struct {
			__u32	disable_gpu_timeout	: 1;
			__u32	reserved		: 31;
		};
		__u32	value;
	};
};

struct d3dkmt_createhwqueue {
	struct d3dkmthandle		context;
	struct d3dddi_createhwqueueflags flags;
	__u32				priv_drv_data_size;
	__u32				reserved;
	__u64				priv_drv_data;
	struct d3dkmthandle		queue;
	struct d3dkmthandle		queue_progress_fence;
	__u64				queue_progress_fence_cpu_va;
	__u64				queue_progress_fence_gpu_va;
};

struct d3dkmt_destroyhwqueue {
	struct d3dkmthandle	queue;
};

enum d3dddi_pagingqueue_priority {
	_D3DDDI_PAGINGQUEUE_PRIORITY_BELOW_NORMAL	= -1,
	_D3DDDI_PAGINGQUEUE_PRIORITY_NORMAL		= 0,
	_D3DDDI_PAGINGQUEUE_PRIORITY_ABOVE_NORMAL	= 1,
};

struct d3dkmt_createpagingqueue {
	struct d3dkmthandle		device;
	enum d3dddi_pagingqueue_priority priority;
	struct d3dkmthandle		paging_queue;
	struct d3dkmthandle		sync_object;
	__u64				fence_cpu_virtual_address;
	__u32				physical_adapter_index;
};

struct d3dddi_destroypagingqueue {
	struct d3dkmthandle	paging_queue;
};

enum d3dkmt_devicestate_type {
	_D3DKMT_DEVICESTATE_EXECUTION		= 1,
	_D3DKMT_DEVICESTATE_PRESENT		= 2,
	_D3DKMT_DEVICESTATE_RESET		= 3,
	_D3DKMT_DEVICESTATE_PRESENT_DWM		= 4,
	_D3DKMT_DEVICESTATE_PAGE_FAULT		= 5,
	_D3DKMT_DEVICESTATE_PRESENT_QUEUE	= 6,
};

enum d3dkmt_deviceexecution_state {
	_D3DKMT_DEVICEEXECUTION_ACTIVE			= 1,
	_D3DKMT_DEVICEEXECUTION_RESET			= 2,
	_D3DKMT_DEVICEEXECUTION_HUNG			= 3,
	_D3DKMT_DEVICEEXECUTION_STOPPED			= 4,
	_D3DKMT_DEVICEEXECUTION_ERROR_OUTOFMEMORY	= 5,
	_D3DKMT_DEVICEEXECUTION_ERROR_DMAFAULT		= 6,
	_D3DKMT_DEVICEEXECUTION_ERROR_DMAPAGEFAULT	= 7,
};

/*
 * The state union's other members (present statistics, page fault
 * details) are display/diagnostic state dxvmm does not report; the union
 * keeps their 48-byte size.
 */
struct d3dkmt_getdevicestate {
	struct d3dkmthandle			device;
	enum d3dkmt_devicestate_type		state_type;
	union {
		enum d3dkmt_deviceexecution_state	execution_state;
		__u64					reserved[6];
	};
};

/* ---- allocations -------------------------------------------------------- */

struct d3dddi_allocationinfo2 {
	struct d3dkmthandle	allocation;
	__u64			sysmem;		/* const void * */
	__u64			priv_drv_data;
	__u32			priv_drv_data_size;
	__u32			vidpn_source_id;
	union {
		struct {
			__u32	primary			: 1;
			__u32	stereo			: 1;
			__u32	override_priority	: 1;
			__u32	reserved		: 29;
		};
		__u32	value;
	} flags;
	__u64			gpu_virtual_address;
	union {
		__u32		priority;
		__u64		unused;
	};
	__u64			reserved[5];
};

enum d3dkmt_standardallocationtype {
	_D3DKMT_STANDARDALLOCATIONTYPE_EXISTINGHEAP	= 1,
	_D3DKMT_STANDARDALLOCATIONTYPE_CROSSADAPTER	= 2,
};

struct d3dkmt_standardallocation_existingheap {
	__u64	size;
};

struct d3dkmt_createstandardallocationflags {
	union {
		struct {
			__u32	reserved : 32;
		};
		__u32	value;
	};
};

struct d3dkmt_createstandardallocation {
	enum d3dkmt_standardallocationtype		type;
	__u32						reserved;
	struct d3dkmt_standardallocation_existingheap	existing_heap_data;
	struct d3dkmt_createstandardallocationflags	flags;
	__u32						reserved1;
};

struct d3dkmt_createallocationflags {
	union {
		struct {
			__u32	create_resource		: 1;
			__u32	create_shared		: 1;
			__u32	non_secure		: 1;
			__u32	create_protected	: 1;
			__u32	restrict_shared_access	: 1;
			__u32	existing_sysmem		: 1;
			__u32	nt_security_sharing	: 1;
			__u32	read_only		: 1;
			__u32	create_write_combined	: 1;
			__u32	create_cached		: 1;
			__u32	swap_chain_back_buffer	: 1;
			__u32	cross_adapter		: 1;
			__u32	open_cross_adapter	: 1;
			__u32	partial_shared_creation	: 1;
			__u32	zeroed			: 1;
			__u32	write_watch		: 1;
			__u32	standard_allocation	: 1;
			__u32	existing_section	: 1;
			__u32	reserved		: 14;
		};
		__u32	value;
	};
};

struct d3dkmt_createallocation {
	struct d3dkmthandle		device;
	struct d3dkmthandle		resource;
	struct d3dkmthandle		global_share;
	__u32				reserved;
	__u64				private_runtime_data;
	__u32				private_runtime_data_size;
	__u32				reserved1;
	union {
		__u64			standard_allocation;
		__u64			priv_drv_data;
	};
	__u32				priv_drv_data_size;
	__u32				alloc_count;
	__u64				allocation_info; /* struct d3dddi_allocationinfo2 * */
	struct d3dkmt_createallocationflags flags;
	__u32				reserved2;
	__u64				private_runtime_resource_handle;
};

struct d3dddicb_destroyallocation2flags {
	union {
		struct {
			__u32	assume_not_in_use	: 1;
			__u32	synchronous_destroy	: 1;
			__u32	reserved		: 29;
			__u32	system_use_only		: 1;
		};
		__u32	value;
	};
};

struct d3dkmt_destroyallocation2 {
	struct d3dkmthandle			device;
	struct d3dkmthandle			resource;
	__u64					allocations;
	__u32					alloc_count;
	struct d3dddicb_destroyallocation2flags	flags;
};

struct d3dddi_makeresident_flags {
	union {
		struct {
			__u32	cant_trim_further	: 1;
			__u32	must_succeed		: 1;
			__u32	reserved		: 30;
		};
		__u32	value;
	};
};

struct d3dddi_makeresident {
	struct d3dkmthandle		paging_queue;
	__u32				alloc_count;
	__u64				allocation_list;
	__u64				priority_list;
	struct d3dddi_makeresident_flags flags;
	__u64				paging_fence_value;
	__u64				num_bytes_to_trim;
};

struct d3dddi_evict_flags {
	union {
		struct {
			__u32	evict_only_if_necessary	: 1;
			__u32	not_written_to		: 1;
			__u32	reserved		: 30;
		};
		__u32	value;
	};
};

struct d3dkmt_evict {
	struct d3dkmthandle	device;
	__u32			alloc_count;
	__u64			allocations;
	struct d3dddi_evict_flags flags;
	__u32			reserved;
	__u64			num_bytes_to_trim;
};

enum d3dkmt_allocationresidencystatus {
	_D3DKMT_ALLOCATIONRESIDENCYSTATUS_RESIDENTINGPUMEMORY		= 1,
	_D3DKMT_ALLOCATIONRESIDENCYSTATUS_RESIDENTINSHAREDMEMORY	= 2,
	_D3DKMT_ALLOCATIONRESIDENCYSTATUS_NOTRESIDENT			= 3,
};

struct d3dkmt_queryallocationresidency {
	struct d3dkmthandle	device;
	struct d3dkmthandle	resource;
	__u64			allocations;
	__u32			allocation_count;
	__u32			reserved;
	__u64			residency_status;
};

struct d3dkmt_queryresourceinfo {
	struct d3dkmthandle	device;
	struct d3dkmthandle	global_share;
	__u64			private_runtime_data;
	__u32			private_runtime_data_size;
	__u32			total_priv_drv_data_size;
	__u32			resource_priv_drv_data_size;
	__u32			allocation_count;
};

struct d3dkmt_setallocationpriority {
	struct d3dkmthandle	device;
	struct d3dkmthandle	resource;
	__u64			allocation_list;
	__u32			allocation_count;
	__u32			reserved;
	__u64			priorities;
};

struct d3dkmt_getallocationpriority {
	struct d3dkmthandle	device;
	struct d3dkmthandle	resource;
	__u64			allocation_list;
	__u32			allocation_count;
	__u32			reserved;
	__u64			priorities;
};

struct d3dddicb_lock2flags {
	union {
		struct {
			__u32	reserved : 32;
		};
		__u32	value;
	};
};

struct d3dkmt_lock2 {
	struct d3dkmthandle		device;
	struct d3dkmthandle		allocation;
	struct d3dddicb_lock2flags	flags;
	__u32				reserved;
	__u64				data;
};

struct d3dkmt_unlock2 {
	struct d3dkmthandle	device;
	struct d3dkmthandle	allocation;
};

/* ---- GPU virtual addresses ---------------------------------------------- */

struct d3dddigpuva_protection_type {
	union {
		struct {
			__u64	write		: 1;
			__u64	execute		: 1;
			__u64	zero		: 1;
			__u64	no_access	: 1;
			__u64	system_use_only	: 1;
			__u64	reserved	: 59;
		};
		__u64	value;
	};
};

enum d3dddigpuva_reservation_type {
	_D3DDDIGPUVA_RESERVE_NO_ACCESS	= 0,
	_D3DDDIGPUVA_RESERVE_ZERO	= 1,
	_D3DDDIGPUVA_RESERVE_NO_COMMIT	= 2
};

struct d3dddi_reservegpuvirtualaddress {
	struct d3dkmthandle			adapter;
	__u64					base_address;
	__u64					minimum_address;
	__u64					maximum_address;
	__u64					size;
	enum d3dddigpuva_reservation_type	reservation_type;
	__u64					driver_protection;
	__u64					virtual_address;
	__u64					paging_fence_value;
};

struct d3dddi_mapgpuvirtualaddress {
	struct d3dkmthandle			paging_queue;
	__u64					base_address;
	__u64					minimum_address;
	__u64					maximum_address;
	struct d3dkmthandle			allocation;
	__u64					offset_in_pages;
	__u64					size_in_pages;
	struct d3dddigpuva_protection_type	protection;
	__u64					driver_protection;
	__u32					reserved0;
	__u64					reserved1;
	__u64					virtual_address;
	__u64					paging_fence_value;
};

struct d3dkmt_freegpuvirtualaddress {
	struct d3dkmthandle	adapter;
	__u32			reserved;
	__u64			base_address;
	__u64			size;
};

/* ---- synchronisation objects --------------------------------------------- */

struct d3dddi_synchronizationobject_flags {
	union {
		struct {
			__u32	shared				: 1;
			__u32	nt_security_sharing		: 1;
			__u32	cross_adapter			: 1;
			__u32	top_of_pipeline			: 1;
			__u32	no_signal			: 1;
			__u32	no_wait				: 1;
			__u32	no_signal_max_value_on_tdr	: 1;
			__u32	no_gpu_access			: 1;
			__u32	reserved			: 23;
		};
		__u32	value;
	};
};

enum d3dddi_synchronizationobject_type {
	_D3DDDI_SYNCHRONIZATION_MUTEX		= 1,
	_D3DDDI_SEMAPHORE			= 2,
	_D3DDDI_FENCE				= 3,
	_D3DDDI_CPU_NOTIFICATION		= 4,
	_D3DDDI_MONITORED_FENCE			= 5,
	_D3DDDI_PERIODIC_MONITORED_FENCE	= 6,
	_D3DDDI_SYNCHRONIZATION_TYPE_LIMIT
};

struct d3dddi_synchronizationobjectinfo2 {
	enum d3dddi_synchronizationobject_type	type;
	struct d3dddi_synchronizationobject_flags flags;
	union {
		struct {
			__u32	initial_state;
		} synchronization_mutex;
		struct {
			__u32	max_count;
			__u32	initial_count;
		} semaphore;
		struct {
			__u64	fence_value;
		} fence;
		struct {
			__u64	event;
		} cpu_notification;
		struct {
			__u64	initial_fence_value;
			__u64	fence_cpu_virtual_address;
			__u64	fence_gpu_virtual_address;
			__u32	engine_affinity;
		} monitored_fence;
		struct {
			struct d3dkmthandle	adapter;
			__u32			vidpn_target_id;
			__u64			time;
			__u64			fence_cpu_virtual_address;
			__u64			fence_gpu_virtual_address;
			__u32			engine_affinity;
		} periodic_monitored_fence;
		struct {
			__u64	reserved[8];
		} reserved;
	};
	struct d3dkmthandle			shared_handle;
};

struct d3dkmt_createsynchronizationobject2 {
	struct d3dkmthandle			device;
	__u32					reserved;
	struct d3dddi_synchronizationobjectinfo2 info;
	struct d3dkmthandle			sync_object;
	__u32					reserved1;
};

struct d3dkmt_destroysynchronizationobject {
	struct d3dkmthandle	sync_object;
};

struct d3dkmt_opensynchronizationobject {
	struct d3dkmthandle	shared_handle;
	struct d3dkmthandle	sync_object;
	__u64			reserved[8];
};

struct d3dddicb_signalflags {
	union {
		struct {
			__u32	signal_at_submission		: 1;
			__u32	enqueue_cpu_event		: 1;
			__u32	allow_fence_rewind		: 1;
			__u32	reserved			: 28;
			__u32	DXGK_SIGNAL_FLAG_INTERNAL0	: 1;
		};
		__u32	value;
	};
};

struct d3dddi_waitforsynchronizationobjectfromcpu_flags {
	union {
		struct {
			__u32	wait_any	: 1;
			__u32	reserved	: 31;
		};
		__u32	value;
	};
};

struct d3dkmt_waitforsynchronizationobjectfromcpu {
	struct d3dkmthandle	device;
	__u32			object_count;
	__u64			objects;	/* struct d3dkmthandle * */
	__u64			fence_values;	/* __u64 * */
	__u64			async_event;	/* eventfd, or 0 to block */
	struct d3dddi_waitforsynchronizationobjectfromcpu_flags flags;
};

struct d3dkmt_signalsynchronizationobjectfromcpu {
	struct d3dkmthandle		device;
	__u32				object_count;
	__u64				objects;
	__u64				fence_values;
	struct d3dddicb_signalflags	flags;
};

struct d3dkmt_waitforsynchronizationobjectfromgpu {
	struct d3dkmthandle	context;
	__u32			object_count;
	__u64			objects;
	union {
		__u64		monitored_fence_values;
		__u64		fence_value;
		__u64		reserved[8];
	};
};

struct d3dkmt_signalsynchronizationobjectfromgpu {
	struct d3dkmthandle	context;
	__u32			object_count;
	__u64			objects;
	union {
		__u64		monitored_fence_values;
		__u64		reserved[8];
	};
};

struct d3dkmt_signalsynchronizationobjectfromgpu2 {
	__u32				object_count;
	__u32				reserved1;
	__u64				objects;
	struct d3dddicb_signalflags	flags;
	__u32				context_count;
	__u64				contexts;
	union {
		__u64			fence_value;
		__u64			cpu_event_handle;
		__u64			monitored_fence_values;
		__u64			reserved[8];
	};
};

/* ---- submission and escapes ----------------------------------------------- */

struct d3dkmt_submitcommandflags {
	__u32	null_rendering		: 1;
	__u32	present_redirected	: 1;
	__u32	reserved		: 30;
};

struct d3dkmt_submitcommand {
	__u64				command_buffer;	/* GPU VA of a command stream */
	__u32				command_length;
	struct d3dkmt_submitcommandflags flags;
	__u64				present_history_token;
	__u32				broadcast_context_count;
	struct d3dkmthandle	broadcast_context[D3DDDI_MAX_BROADCAST_CONTEXT];
	__u32				reserved;
	__u64				priv_drv_data;
	__u32				priv_drv_data_size;
	__u32				num_primaries;
	struct d3dkmthandle	written_primaries[D3DDDI_MAX_WRITTEN_PRIMARIES];
	__u32				num_history_buffers;
	__u32				reserved1;
	__u64				history_buffer_array;
};

struct d3dkmt_submitcommandtohwqueue {
	struct d3dkmthandle	hwqueue;
	__u32			reserved;
	__u64			hwqueue_progress_fence_id;
	__u64			command_buffer;
	__u32			command_length;
	__u32			priv_drv_data_size;
	__u64			priv_drv_data;
	__u32			num_primaries;
	__u32			reserved1;
	__u64			written_primaries;
};

enum d3dkmt_escapetype {
	_D3DKMT_ESCAPE_DRIVERPRIVATE	= 0,
	_D3DKMT_ESCAPE_VIDMM		= 1,
	_D3DKMT_ESCAPE_VIDSCH		= 3,
	_D3DKMT_ESCAPE_DEVICE		= 4,
	_D3DKMT_ESCAPE_DRT_TEST		= 8,
};

struct d3dddi_escapeflags {
	union {
		struct {
			__u32	hardware_access			: 1;
			__u32	device_status_query		: 1;
			__u32	change_frame_latency		: 1;
			__u32	no_adapter_synchronization	: 1;
			__u32	reserved			: 1;
			__u32	virtual_machine_data		: 1;
			__u32	driver_known_escape		: 1;
			__u32	driver_common_escape		: 1;
			__u32	reserved2			: 24;
		};
		__u32	value;
	};
};

struct d3dkmt_escape {
	struct d3dkmthandle		adapter;
	struct d3dkmthandle		device;
	enum d3dkmt_escapetype		type;
	struct d3dddi_escapeflags	flags;
	__u64				priv_drv_data;
	__u32				priv_drv_data_size;
	struct d3dkmthandle		context;
};

/* ---- ioctl numbers ----------------------------------------------------- */

#define LX_DXOPENADAPTERFROMLUID \
	_IOWR(0x47, 0x01, struct d3dkmt_openadapterfromluid)
#define LX_DXCREATEDEVICE \
	_IOWR(0x47, 0x02, struct d3dkmt_createdevice)
#define LX_DXCREATECONTEXTVIRTUAL \
	_IOWR(0x47, 0x04, struct d3dkmt_createcontextvirtual)
#define LX_DXDESTROYCONTEXT \
	_IOWR(0x47, 0x05, struct d3dkmt_destroycontext)
#define LX_DXCREATEALLOCATION \
	_IOWR(0x47, 0x06, struct d3dkmt_createallocation)
#define LX_DXCREATEPAGINGQUEUE \
	_IOWR(0x47, 0x07, struct d3dkmt_createpagingqueue)
#define LX_DXRESERVEGPUVIRTUALADDRESS \
	_IOWR(0x47, 0x08, struct d3dddi_reservegpuvirtualaddress)
#define LX_DXQUERYADAPTERINFO \
	_IOWR(0x47, 0x09, struct d3dkmt_queryadapterinfo)
#define LX_DXQUERYVIDEOMEMORYINFO \
	_IOWR(0x47, 0x0a, struct d3dkmt_queryvideomemoryinfo)
#define LX_DXMAKERESIDENT \
	_IOWR(0x47, 0x0b, struct d3dddi_makeresident)
#define LX_DXMAPGPUVIRTUALADDRESS \
	_IOWR(0x47, 0x0c, struct d3dddi_mapgpuvirtualaddress)
#define LX_DXESCAPE \
	_IOWR(0x47, 0x0d, struct d3dkmt_escape)
#define LX_DXGETDEVICESTATE \
	_IOWR(0x47, 0x0e, struct d3dkmt_getdevicestate)
#define LX_DXSUBMITCOMMAND \
	_IOWR(0x47, 0x0f, struct d3dkmt_submitcommand)
#define LX_DXCREATESYNCHRONIZATIONOBJECT \
	_IOWR(0x47, 0x10, struct d3dkmt_createsynchronizationobject2)
#define LX_DXDESTROYALLOCATION2 \
	_IOWR(0x47, 0x13, struct d3dkmt_destroyallocation2)
#define LX_DXENUMADAPTERS2 \
	_IOWR(0x47, 0x14, struct d3dkmt_enumadapters2)
#define LX_DXCLOSEADAPTER \
	_IOWR(0x47, 0x15, struct d3dkmt_closeadapter)
#define LX_DXCREATEHWQUEUE \
	_IOWR(0x47, 0x18, struct d3dkmt_createhwqueue)
#define LX_DXDESTROYDEVICE \
	_IOWR(0x47, 0x19, struct d3dkmt_destroydevice)
#define LX_DXDESTROYHWQUEUE \
	_IOWR(0x47, 0x1b, struct d3dkmt_destroyhwqueue)
#define LX_DXDESTROYPAGINGQUEUE \
	_IOWR(0x47, 0x1c, struct d3dddi_destroypagingqueue)
#define LX_DXDESTROYSYNCHRONIZATIONOBJECT \
	_IOWR(0x47, 0x1d, struct d3dkmt_destroysynchronizationobject)
#define LX_DXEVICT \
	_IOWR(0x47, 0x1e, struct d3dkmt_evict)
#define LX_DXFREEGPUVIRTUALADDRESS \
	_IOWR(0x47, 0x20, struct d3dkmt_freegpuvirtualaddress)
#define LX_DXLOCK2 \
	_IOWR(0x47, 0x25, struct d3dkmt_lock2)
#define LX_DXOPENSYNCHRONIZATIONOBJECT \
	_IOWR(0x47, 0x29, struct d3dkmt_opensynchronizationobject)
#define LX_DXQUERYALLOCATIONRESIDENCY \
	_IOWR(0x47, 0x2a, struct d3dkmt_queryallocationresidency)
#define LX_DXQUERYRESOURCEINFO \
	_IOWR(0x47, 0x2b, struct d3dkmt_queryresourceinfo)
#define LX_DXSETALLOCATIONPRIORITY \
	_IOWR(0x47, 0x2e, struct d3dkmt_setallocationpriority)
#define LX_DXSIGNALSYNCHRONIZATIONOBJECTFROMCPU \
	_IOWR(0x47, 0x31, struct d3dkmt_signalsynchronizationobjectfromcpu)
#define LX_DXSIGNALSYNCHRONIZATIONOBJECTFROMGPU \
	_IOWR(0x47, 0x32, struct d3dkmt_signalsynchronizationobjectfromgpu)
#define LX_DXSIGNALSYNCHRONIZATIONOBJECTFROMGPU2 \
	_IOWR(0x47, 0x33, struct d3dkmt_signalsynchronizationobjectfromgpu2)
#define LX_DXSUBMITCOMMANDTOHWQUEUE \
	_IOWR(0x47, 0x34, struct d3dkmt_submitcommandtohwqueue)
#define LX_DXUNLOCK2 \
	_IOWR(0x47, 0x37, struct d3dkmt_unlock2)
#define LX_DXWAITFORSYNCHRONIZATIONOBJECTFROMCPU \
	_IOWR(0x47, 0x3a, struct d3dkmt_waitforsynchronizationobjectfromcpu)
#define LX_DXWAITFORSYNCHRONIZATIONOBJECTFROMGPU \
	_IOWR(0x47, 0x3b, struct d3dkmt_waitforsynchronizationobjectfromgpu)
#define LX_DXGETALLOCATIONPRIORITY \
	_IOWR(0x47, 0x3c, struct d3dkmt_getallocationpriority)
#define LX_DXENUMADAPTERS3 \
	_IOWR(0x47, 0x3e, struct d3dkmt_enumadapters3)

/* ---- layout checks (the same numbers as protocol/src/abi.rs) ------------ */

D3DKMT_ASSERT_SIZE(struct d3dkmthandle, 4);
D3DKMT_ASSERT_SIZE(struct winluid, 8);
D3DKMT_ASSERT_SIZE(struct d3dkmt_adapterinfo, 20);
D3DKMT_ASSERT_SIZE(struct d3dkmt_enumadapters2, 16);
D3DKMT_ASSERT_SIZE(struct d3dkmt_enumadapters3, 24);
D3DKMT_ASSERT_SIZE(struct d3dkmt_openadapterfromluid, 12);
D3DKMT_ASSERT_SIZE(struct d3dkmt_queryadapterinfo, 24);
D3DKMT_ASSERT_OFF(struct d3dkmt_queryadapterinfo, private_data_size, 16);
D3DKMT_ASSERT_SIZE(struct d3dkmt_queryvideomemoryinfo, 56);
D3DKMT_ASSERT_OFF(struct d3dkmt_queryvideomemoryinfo, physical_adapter_index, 48);
D3DKMT_ASSERT_SIZE(struct d3dkmt_createdevice, 64);
D3DKMT_ASSERT_OFF(struct d3dkmt_createdevice, device, 12);
D3DKMT_ASSERT_SIZE(struct d3dkmt_createcontextvirtual, 40);
D3DKMT_ASSERT_OFF(struct d3dkmt_createcontextvirtual, context, 32);
D3DKMT_ASSERT_SIZE(struct d3dkmt_createhwqueue, 48);
D3DKMT_ASSERT_OFF(struct d3dkmt_createhwqueue, queue_progress_fence_gpu_va, 40);
D3DKMT_ASSERT_SIZE(struct d3dkmt_createpagingqueue, 32);
D3DKMT_ASSERT_SIZE(struct d3dkmt_getdevicestate, 56);
D3DKMT_ASSERT_SIZE(struct d3dddi_allocationinfo2, 96);
D3DKMT_ASSERT_OFF(struct d3dddi_allocationinfo2, gpu_virtual_address, 40);
D3DKMT_ASSERT_OFF(struct d3dddi_allocationinfo2, reserved, 56);
D3DKMT_ASSERT_SIZE(struct d3dkmt_createstandardallocation, 24);
D3DKMT_ASSERT_SIZE(struct d3dkmt_createallocation, 72);
D3DKMT_ASSERT_OFF(struct d3dkmt_createallocation, flags, 56);
D3DKMT_ASSERT_SIZE(struct d3dkmt_destroyallocation2, 24);
D3DKMT_ASSERT_SIZE(struct d3dddi_makeresident, 48);
D3DKMT_ASSERT_OFF(struct d3dddi_makeresident, paging_fence_value, 32);
D3DKMT_ASSERT_SIZE(struct d3dkmt_evict, 32);
D3DKMT_ASSERT_SIZE(struct d3dkmt_queryallocationresidency, 32);
D3DKMT_ASSERT_SIZE(struct d3dkmt_queryresourceinfo, 32);
D3DKMT_ASSERT_SIZE(struct d3dkmt_getallocationpriority, 32);
D3DKMT_ASSERT_SIZE(struct d3dkmt_setallocationpriority, 32);
D3DKMT_ASSERT_SIZE(struct d3dkmt_lock2, 24);
D3DKMT_ASSERT_SIZE(struct d3dkmt_unlock2, 8);
D3DKMT_ASSERT_SIZE(struct d3dddi_reservegpuvirtualaddress, 72);
D3DKMT_ASSERT_OFF(struct d3dddi_reservegpuvirtualaddress, reservation_type, 40);
D3DKMT_ASSERT_SIZE(struct d3dddi_mapgpuvirtualaddress, 104);
D3DKMT_ASSERT_OFF(struct d3dddi_mapgpuvirtualaddress, protection, 56);
D3DKMT_ASSERT_OFF(struct d3dddi_mapgpuvirtualaddress, reserved1, 80);
D3DKMT_ASSERT_OFF(struct d3dddi_mapgpuvirtualaddress, virtual_address, 88);
D3DKMT_ASSERT_SIZE(struct d3dkmt_freegpuvirtualaddress, 24);
D3DKMT_ASSERT_SIZE(struct d3dddi_synchronizationobjectinfo2, 80);
D3DKMT_ASSERT_OFF(struct d3dddi_synchronizationobjectinfo2, shared_handle, 72);
D3DKMT_ASSERT_SIZE(struct d3dkmt_createsynchronizationobject2, 96);
D3DKMT_ASSERT_OFF(struct d3dkmt_createsynchronizationobject2, sync_object, 88);
D3DKMT_ASSERT_SIZE(struct d3dkmt_opensynchronizationobject, 72);
D3DKMT_ASSERT_SIZE(struct d3dkmt_waitforsynchronizationobjectfromcpu, 40);
D3DKMT_ASSERT_SIZE(struct d3dkmt_signalsynchronizationobjectfromcpu, 32);
D3DKMT_ASSERT_SIZE(struct d3dkmt_waitforsynchronizationobjectfromgpu, 80);
D3DKMT_ASSERT_SIZE(struct d3dkmt_signalsynchronizationobjectfromgpu, 80);
D3DKMT_ASSERT_SIZE(struct d3dkmt_signalsynchronizationobjectfromgpu2, 96);
D3DKMT_ASSERT_OFF(struct d3dkmt_signalsynchronizationobjectfromgpu2, fence_value, 32);
D3DKMT_ASSERT_SIZE(struct d3dkmt_submitcommand, 384);
D3DKMT_ASSERT_OFF(struct d3dkmt_submitcommand, broadcast_context, 28);
D3DKMT_ASSERT_OFF(struct d3dkmt_submitcommand, priv_drv_data, 288);
D3DKMT_ASSERT_OFF(struct d3dkmt_submitcommand, written_primaries, 304);
D3DKMT_ASSERT_OFF(struct d3dkmt_submitcommand, history_buffer_array, 376);
D3DKMT_ASSERT_SIZE(struct d3dkmt_submitcommandtohwqueue, 56);
D3DKMT_ASSERT_SIZE(struct d3dkmt_escape, 32);

#endif /* _UAPI_MISC_D3DKMTHK_H */
