/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * dxvmm: the virtual GPU's private formats, shared by the guest's user-mode
 * driver (libdxg) and the host backend:
 *  - the command stream a SUBMITCOMMAND command buffer holds,
 *  - the driver-private escapes that create and destroy compute pipelines,
 *  - the adapter description QUERYADAPTERINFO(_KMTQAITYPE_UMDRIVERPRIVATE)
 *    returns.
 * All little endian. Rust twins: protocol/src/cmdstream.rs, escape.rs.
 * docs/protocol.md describes the rules the decoders enforce.
 */
#ifndef _UAPI_MISC_DXVMM_GPU_H
#define _UAPI_MISC_DXVMM_GPU_H

#include <linux/types.h>
#ifdef __KERNEL__
#include <linux/stddef.h>
#else
#include <stddef.h>
#endif

/* ---- command stream ----------------------------------------------------- */

#define DXGV_CMDSTREAM_MAGIC		0x53435844u	/* "DXCS" */
#define DXGV_CMDSTREAM_VERSION		1
#define DXGV_CMDSTREAM_MAX_COMMANDS	4096
#define DXGV_CMDSTREAM_MAX_BINDINGS	32
#define DXGV_CMDSTREAM_MAX_GROUPS	65535
#define DXGV_CMDSTREAM_MAX_SIZE		(1u << 20)

enum dxgv_cmd_opcode {
	DXGV_CMD_COPY		= 1,
	DXGV_CMD_FILL		= 2,
	DXGV_CMD_DISPATCH	= 3,
	DXGV_CMD_TIMESTAMP	= 4,
	DXGV_CMD_FENCE_SIGNAL	= 5,
	DXGV_CMD_FENCE_WAIT	= 6,
	DXGV_CMD_UPLOAD		= 7,
};

#define DXGV_BINDING_READ_ONLY	(1u << 0)

struct dxgv_cmdstream_header {
	__u32	magic;
	__u16	version;
	__u16	flags;		/* 0 */
	__u32	size;		/* whole stream, this header included */
	__u32	command_count;
};

struct dxgv_cmd_header {
	__u16	opcode;		/* enum dxgv_cmd_opcode */
	__u16	flags;		/* 0 */
	__u32	size;		/* this command, header included */
};

struct dxgv_cmd_copy {
	struct dxgv_cmd_header	hdr;
	__u64	src_va;
	__u64	dst_va;
	__u64	size;
};

struct dxgv_cmd_fill {
	struct dxgv_cmd_header	hdr;
	__u64	dst_va;
	__u64	size;
	__u32	value;
	__u32	pad0;
};

/* Followed by binding_count struct dxgv_cmd_binding. */
struct dxgv_cmd_dispatch {
	struct dxgv_cmd_header	hdr;
	__u32	pipeline;
	__u32	binding_count;
	__u32	group_count_x;
	__u32	group_count_y;
	__u32	group_count_z;
	__u32	pad0;
};

struct dxgv_cmd_binding {
	__u32	binding;	/* @group(0) @binding(n) */
	__u32	flags;		/* DXGV_BINDING_* */
	__u64	va;
	__u64	size;
};

struct dxgv_cmd_timestamp {
	struct dxgv_cmd_header	hdr;
	__u64	dst_va;
};

/* FENCE_SIGNAL and FENCE_WAIT. */
struct dxgv_cmd_fence {
	struct dxgv_cmd_header	hdr;
	__u32	sync_object;	/* struct d3dkmthandle value */
	__u32	pad0;
	__u64	value;
};

/*
 * UPLOAD: the GPU takes [va, va + size) of a CPU-visible allocation from its
 * pages now; the process leaves those bytes alone until its next LOCK2.
 */
struct dxgv_cmd_upload {
	struct dxgv_cmd_header	hdr;
	__u64	va;
	__u64	size;
};

/* ---- escapes ------------------------------------------------------------ */

#define DXGV_ESCAPE_MAGIC		0x53455844u	/* "DXES" */
#define DXGV_ESCAPE_VERSION		1
#define DXGV_ESCAPE_MAX_ENTRY_POINT	256
#define DXGV_ESCAPE_MAX_ERROR_TEXT	(16 * 1024)

enum dxgv_escape_op {
	DXGV_ESCAPE_CREATE_PIPELINE	= 1,
	DXGV_ESCAPE_DESTROY_PIPELINE	= 2,
};

enum dxgv_shader_language {
	DXGV_SHADER_WGSL	= 1,
	DXGV_SHADER_SPIRV	= 2,
};

struct dxgv_escape_header {
	__u32	magic;
	__u16	version;
	__u16	op;		/* enum dxgv_escape_op */
	__u32	size;		/* whole escape buffer */
	__s32	status;		/* out: NTSTATUS */
};

/*
 * Followed by source_size bytes of shader, entry_point_size bytes of entry
 * point name (no NUL), and error_capacity bytes for the host's messages.
 */
struct dxgv_escape_create_pipeline {
	__u32	pipeline;	/* out */
	__u32	language;	/* enum dxgv_shader_language */
	__u32	source_size;
	__u32	entry_point_size;
	__u32	error_capacity;
	__u32	error_size;	/* out */
};

struct dxgv_escape_destroy_pipeline {
	__u32	pipeline;
	__u32	pad0;
};

/* ---- adapter description ------------------------------------------------ */

#define DXGV_UMD_INFO_MAGIC	0x49555844u	/* "DXUI" */
#define DXGV_UMD_INFO_VERSION	1

struct dxgv_umd_adapter_info {
	__u32	magic;
	__u32	version;
	__u32	vendor_id;
	__u32	device_id;
	__u32	device_type;	/* 0 other, 1 integrated, 2 discrete, 3 virtual, 4 cpu */
	__u32	max_bindings;
	__u64	max_buffer_size;
	__u32	max_workgroups_per_dimension;
	__u32	max_invocations_per_workgroup;
	__u32	min_storage_buffer_offset_alignment;
	__u32	pad0;
	char	name[128];	/* UTF-8, NUL-padded */
};

/* ---- allocations --------------------------------------------------------- */

/* The private driver data of one allocation in CREATEALLOCATION. */
#define DXGV_ALLOC_CPU_VISIBLE		(1u << 0)
#define DXGV_MAX_ALLOCATION_ALIGNMENT	(64u * 1024)

struct dxgv_allocation_desc {
	__u64	size;		/* bytes: non-zero, a multiple of 4 */
	__u32	alignment;	/* 0, or a power of two up to 64 KiB */
	__u32	flags;		/* DXGV_ALLOC_* */
};

/* dxvmm's own QUERYADAPTERINFO types (forwarded to the host like any other) */
#define DXGV_QAITYPE_HOST_ADAPTER	0x44580001u
#define DXGV_QAITYPE_HOST_OBJECTS	0x44580002u

#define DXGV_HOST_ADAPTER_MAGIC		0x41485844u	/* "DXHA" */
#define DXGV_HOST_ADAPTER_VERSION	1

struct dxgv_host_adapter_info {
	__u32	magic;
	__u32	version;
	__u32	luid_low;	/* struct winluid: a */
	__u32	luid_high;	/* b */
	__u32	vendor_id;
	__u32	device_id;
	__u32	device_type;	/* as in dxgv_umd_adapter_info */
	__u32	software;
	__u64	memory_bytes;
	char	backend[32];
	char	driver[128];
	char	driver_info[128];
	char	name[128];
};

#define DXGV_HOST_OBJECTS_MAGIC		0x4f485844u	/* "DXHO" */
#define DXGV_HOST_OBJECTS_VERSION	1

struct dxgv_host_objects {
	__u32	magic;
	__u32	version;
	__u32	processes;
	__u32	adapters;
	__u32	devices;
	__u32	contexts;
	__u32	allocations;
	__u32	sync_objects;
	__u32	paging_queues;
	__u32	hw_queues;
	__u32	pipelines;
	__u32	pad0;
};

_Static_assert(sizeof(struct dxgv_cmdstream_header) == 16, "cmdstream header");
_Static_assert(sizeof(struct dxgv_cmd_header) == 8, "cmd header");
_Static_assert(sizeof(struct dxgv_cmd_copy) == 32, "copy");
_Static_assert(sizeof(struct dxgv_cmd_fill) == 32, "fill");
_Static_assert(sizeof(struct dxgv_cmd_dispatch) == 32, "dispatch");
_Static_assert(sizeof(struct dxgv_cmd_binding) == 24, "binding");
_Static_assert(sizeof(struct dxgv_cmd_timestamp) == 16, "timestamp");
_Static_assert(sizeof(struct dxgv_cmd_fence) == 24, "fence");
_Static_assert(sizeof(struct dxgv_cmd_upload) == 24, "upload");
_Static_assert(sizeof(struct dxgv_escape_header) == 16, "escape header");
_Static_assert(sizeof(struct dxgv_escape_create_pipeline) == 24, "create pipeline");
_Static_assert(sizeof(struct dxgv_escape_destroy_pipeline) == 8, "destroy pipeline");
_Static_assert(sizeof(struct dxgv_umd_adapter_info) == 176, "umd info");
_Static_assert(offsetof(struct dxgv_umd_adapter_info, name) == 48, "umd info name");
_Static_assert(sizeof(struct dxgv_host_adapter_info) == 456, "host adapter info");
_Static_assert(offsetof(struct dxgv_host_adapter_info, name) == 328, "host adapter name");
_Static_assert(sizeof(struct dxgv_host_objects) == 48, "host objects");
_Static_assert(sizeof(struct dxgv_allocation_desc) == 16, "allocation desc");

#endif /* _UAPI_MISC_DXVMM_GPU_H */
