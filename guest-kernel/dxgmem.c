// SPDX-License-Identifier: GPL-2.0
/*
 * dxgkrnl for dxvmm: guest pages of allocations, fence slots and the
 * mappings of both in user space (docs/protocol.md §2.6.2-2.6.5).
 *
 * The host reaches allocation pages and fence slots by guest physical
 * address, so both are plain order-0 pages (the caller's, pinned with
 * FOLL_LONGTERM, or the driver's, zeroed). User space sees the driver's
 * pages through mmap of /dev/dxg: LOCK2 and the fence ioctls call
 * vm_mmap() on the caller's own file with an offset that names the object,
 * and dxg_mmap() inserts the pages. A vma holds a reference on the page set
 * it maps, so pages outlive a destroyed allocation until the last munmap;
 * a vma also holds the file, so the process (and its fence pages) outlives
 * every mapping.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/fs.h>
#include <linux/mm.h>
#include <linux/mman.h>
#include <linux/pfn.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/version.h>

#include "dxgkrnl.h"

/* ---- page sets ----------------------------------------------------------- */

static struct dxg_pages *dxg_pages_new(unsigned long npages, bool user)
{
	struct dxg_pages *pages;

	pages = kzalloc(sizeof(*pages), GFP_KERNEL);
	if (!pages)
		return NULL;
	pages->pages = kvcalloc(npages, sizeof(*pages->pages), GFP_KERNEL);
	if (!pages->pages) {
		kfree(pages);
		return NULL;
	}
	kref_init(&pages->ref);
	pages->user = user;
	return pages;
}

static void dxg_pages_release(struct kref *ref)
{
	struct dxg_pages *pages = container_of(ref, struct dxg_pages, ref);
	unsigned long i;

	if (pages->user) {
		/* The host may have written them (LOCK2, GPU results). */
		unpin_user_pages_dirty_lock(pages->pages, pages->npages, true);
	} else {
		for (i = 0; i < pages->npages; i++)
			__free_page(pages->pages[i]);
	}
	kvfree(pages->pages);
	kfree(pages);
}

void dxg_pages_put(struct dxg_pages *pages)
{
	if (pages)
		kref_put(&pages->ref, dxg_pages_release);
}

/* Largest block dxg_pages_alloc() asks for (4 MiB with 4 KiB pages). */
#ifdef MAX_PAGE_ORDER
#define DXG_BLOCK_ORDER min(MAX_PAGE_ORDER, 10)
#else
#define DXG_BLOCK_ORDER min(MAX_ORDER - 1, 10)
#endif

/*
 * Zeroed pages of the driver's: the host must never see stale data.
 *
 * Taken in the largest physically contiguous blocks the allocator has to
 * spare, then split into order-0 pages (everything else handles pages one
 * by one): the host moves an allocation's bytes in one GPU copy per
 * contiguous run of guest-physical pages, so a 64 MiB allocation of 4 MiB
 * blocks costs 16 copies instead of 16384. Blocks come without retries or
 * compaction; when none is free the order drops, down to single pages.
 */
struct dxg_pages *dxg_pages_alloc(unsigned long npages)
{
	struct dxg_pages *pages = dxg_pages_new(npages, false);
	unsigned int order = DXG_BLOCK_ORDER;
	unsigned long i;

	if (!pages)
		return NULL;
	while (pages->npages < npages) {
		unsigned long left = npages - pages->npages;
		gfp_t gfp = GFP_KERNEL_ACCOUNT | __GFP_ZERO | __GFP_NOWARN;
		struct page *page;

		while (order && (1UL << order) > left)
			order--;
		if (order)
			gfp |= __GFP_NORETRY;
		page = alloc_pages(gfp, order);
		if (!page && order) {
			order--;
			continue;
		}
		if (!page) {
			dxg_pages_put(pages);
			return NULL;
		}
		if (order)
			split_page(page, order);
		for (i = 0; i < (1UL << order); i++)
			pages->pages[pages->npages++] = nth_page(page, i);
		if (fatal_signal_pending(current)) {
			dxg_pages_put(pages);
			return NULL;
		}
	}
	return pages;
}

/*
 * The caller's own pages, pinned for the allocation's lifetime: the host
 * writes them at any time (LOCK2), so they must neither move nor be
 * reclaimed. Returns an ERR_PTR.
 */
struct dxg_pages *dxg_pages_pin(u64 uaddr, unsigned long npages)
{
	struct dxg_pages *pages;
	unsigned long done = 0;
	long n;

	if (!PAGE_ALIGNED(uaddr) || uaddr + npages * PAGE_SIZE < uaddr ||
	    !access_ok(u64_to_user_ptr(uaddr), npages * PAGE_SIZE))
		return ERR_PTR(-EINVAL);
	pages = dxg_pages_new(npages, true);
	if (!pages)
		return ERR_PTR(-ENOMEM);
	while (done < npages) {
		n = pin_user_pages_fast(uaddr + done * PAGE_SIZE,
					min(npages - done, 512UL),
					FOLL_WRITE | FOLL_LONGTERM,
					pages->pages + done);
		if (n <= 0)
			break;
		done += n;
		pages->npages = done;
	}
	if (done < npages) {
		dxg_pages_put(pages);
		return ERR_PTR(n < 0 ? n : -EFAULT);
	}
	return pages;
}

/* ---- mappings ------------------------------------------------------------- */

static void dxg_vma_open(struct vm_area_struct *vma)
{
	struct dxg_pages *pages = vma->vm_private_data;

	kref_get(&pages->ref);
}

static void dxg_vma_close(struct vm_area_struct *vma)
{
	dxg_pages_put(vma->vm_private_data);
}

static const struct vm_operations_struct dxg_alloc_vm_ops = {
	.open	= dxg_vma_open,
	.close	= dxg_vma_close,
};

/* Fence pages live as long as the process, which the vma's file pins. */
static const struct vm_operations_struct dxg_fence_vm_ops = {
};

static void dxg_vma_set_flags(struct vm_area_struct *vma, unsigned long set,
			      unsigned long clear)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 3, 0)
	vm_flags_mod(vma, set, clear);
#else
	vma->vm_flags = (vma->vm_flags | set) & ~clear;
#endif
}

static int dxg_mmap_fence(struct dxg_process *proc, struct vm_area_struct *vma,
			  unsigned long index)
{
	struct page *page;

	/* The host writes fences; user space only reads them. */
	if (vma->vm_flags & (VM_WRITE | VM_EXEC))
		return -EPERM;
	if (vma_pages(vma) != 1)
		return -EINVAL;
	spin_lock(&proc->slot_lock);
	page = proc->fence[index].page;
	spin_unlock(&proc->slot_lock);
	if (!page)
		return -EINVAL;
	dxg_vma_set_flags(vma, VM_DONTEXPAND | VM_DONTDUMP | VM_DONTCOPY,
			  VM_MAYWRITE | VM_MAYEXEC);
	vma->vm_ops = &dxg_fence_vm_ops;
	return vm_insert_page(vma, vma->vm_start, page);
}

static int dxg_mmap_alloc(struct dxg_process *proc, struct vm_area_struct *vma,
			  unsigned long key)
{
	unsigned long npages = vma_pages(vma);
	struct dxg_pages *pages;
	unsigned long num;
	int ret;

	if (key > U32_MAX)
		return -EINVAL;
	xa_lock(&proc->maps);
	pages = xa_load(&proc->maps, key);
	if (pages)
		kref_get(&pages->ref);
	xa_unlock(&proc->maps);
	if (!pages)
		return -EINVAL;
	if (npages > pages->npages) {
		dxg_pages_put(pages);
		return -EINVAL;
	}
	dxg_vma_set_flags(vma, VM_DONTEXPAND | VM_DONTDUMP | VM_DONTCOPY,
			  VM_MAYEXEC);
	vma->vm_private_data = pages;
	vma->vm_ops = &dxg_alloc_vm_ops;
	num = npages;
	ret = vm_insert_pages(vma, vma->vm_start, pages->pages, &num);
	if (ret) {
		/*
		 * A failed ->mmap is unmapped without ->close (6.1's
		 * mmap_region()): drop the reference here.
		 */
		vma->vm_ops = NULL;
		vma->vm_private_data = NULL;
		dxg_pages_put(pages);
	}
	return ret;
}

/*
 * mmap of /dev/dxg: only offsets that name a fence page or an allocation
 * of the calling process map anything, and only shared.
 */
int dxg_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct dxg_process *proc = file->private_data;
	unsigned long pgoff = vma->vm_pgoff;

	if (task_tgid(current) != proc->tgid)
		return -EPERM;
	if (!(vma->vm_flags & VM_SHARED))
		return -EINVAL;
	if (pgoff >= 1 && pgoff <= DXG_FENCE_PAGES)
		return dxg_mmap_fence(proc, vma, pgoff - 1);
	if (pgoff >= DXG_MAP_ALLOC_FIRST)
		return dxg_mmap_alloc(proc, vma, pgoff);
	return -EINVAL;
}

/*
 * LOCK2 of an allocation with driver pages: map them read/write into the
 * caller once; later LOCK2s return the same address. Called with
 * proc->lock held (dxg_mmap() does not take it).
 */
int dxg_map_allocation(struct file *file, struct dxg_object *obj)
{
	struct dxg_process *proc = obj->proc;
	unsigned long addr;
	u32 key;
	int ret;

	if (obj->uaddr)
		return 0;
	if (!obj->map_key) {
		ret = xa_alloc(&proc->maps, &key, obj->pages,
			       XA_LIMIT(DXG_MAP_ALLOC_FIRST, U32_MAX),
			       GFP_KERNEL);
		if (ret)
			return ret == -EBUSY ? -ENOSPC : ret;
		obj->map_key = key;
	}
	addr = vm_mmap(file, 0, obj->pages->npages * PAGE_SIZE,
		       PROT_READ | PROT_WRITE, MAP_SHARED,
		       (unsigned long)obj->map_key << PAGE_SHIFT);
	if (IS_ERR_VALUE(addr))
		return (int)addr;
	obj->uaddr = addr;
	return 0;
}

/* The allocation is going: no new mapping may name its pages. */
void dxg_unmap_key(struct dxg_process *proc, struct dxg_object *obj)
{
	if (obj->map_key) {
		xa_erase(&proc->maps, obj->map_key);
		obj->map_key = 0;
	}
}

/* ---- fence slots ------------------------------------------------------------ */

/*
 * A zeroed 8-byte slot holding `initial`; returns its index and guest
 * physical address. A new fence page is mapped on the slot's first use of
 * the page (dxg_fence_slot_uaddr()).
 */
int dxg_fence_slot_alloc(struct dxg_process *proc, u64 initial, u64 *gpa)
{
	struct page *fresh = NULL;
	unsigned int i, bit;
	u64 *vals;

again:
	spin_lock(&proc->slot_lock);
	for (i = 0; i < DXG_FENCE_PAGES; i++) {
		struct dxg_fence_page *fp = &proc->fence[i];

		if (!fp->page) {
			if (!fresh)
				break;
			fp->page = fresh;
			fresh = NULL;
		}
		if (fp->used == DXG_FENCE_SLOTS_PER_PAGE)
			continue;
		bit = find_first_zero_bit(fp->slots, DXG_FENCE_SLOTS_PER_PAGE);
		__set_bit(bit, fp->slots);
		fp->used++;
		vals = page_address(fp->page);
		WRITE_ONCE(vals[bit], initial);
		*gpa = PFN_PHYS(page_to_pfn(fp->page)) + bit * sizeof(u64);
		spin_unlock(&proc->slot_lock);
		if (fresh)
			__free_page(fresh);
		return i * DXG_FENCE_SLOTS_PER_PAGE + bit;
	}
	spin_unlock(&proc->slot_lock);
	if (fresh || i == DXG_FENCE_PAGES) {
		if (fresh)
			__free_page(fresh);
		return -ENOSPC;
	}
	/* Not under the spinlock: allocate, then look again. */
	fresh = alloc_page(GFP_KERNEL_ACCOUNT | __GFP_ZERO);
	if (!fresh)
		return -ENOMEM;
	goto again;
}

/* After the host let go of the fence (its destroy was answered). */
void dxg_fence_slot_free(struct dxg_process *proc, int slot)
{
	struct dxg_fence_page *fp;
	unsigned int bit;

	if (slot < 0)
		return;
	fp = &proc->fence[slot / DXG_FENCE_SLOTS_PER_PAGE];
	bit = slot % DXG_FENCE_SLOTS_PER_PAGE;
	spin_lock(&proc->slot_lock);
	if (__test_and_clear_bit(bit, fp->slots))
		fp->used--;
	spin_unlock(&proc->slot_lock);
}

/*
 * The slot's address in the calling process: its page is mapped read-only
 * on first use and stays mapped until the process ends. Called with
 * proc->lock held, which serialises the first mapping.
 */
int dxg_fence_slot_uaddr(struct file *file, int slot, u64 *uaddr)
{
	struct dxg_process *proc = file->private_data;
	unsigned int index = slot / DXG_FENCE_SLOTS_PER_PAGE;
	struct dxg_fence_page *fp = &proc->fence[index];
	unsigned long addr;

	lockdep_assert_held(&proc->lock);
	if (!fp->uaddr) {
		addr = vm_mmap(file, 0, PAGE_SIZE, PROT_READ, MAP_SHARED,
			       (unsigned long)(index + 1) << PAGE_SHIFT);
		if (IS_ERR_VALUE(addr))
			return (int)addr;
		fp->uaddr = addr;
	}
	*uaddr = fp->uaddr + (slot % DXG_FENCE_SLOTS_PER_PAGE) * sizeof(u64);
	return 0;
}

/* At process release, after DESTROYPROCESS: no host writes any more. */
void dxg_fence_pages_free(struct dxg_process *proc)
{
	unsigned int i;

	for (i = 0; i < DXG_FENCE_PAGES; i++) {
		if (proc->fence[i].page)
			__free_page(proc->fence[i].page);
		proc->fence[i].page = NULL;
	}
}
