/* A qemu-user TCG plugin: counts the guest instructions each guest thread retires, and snapshots
 * the calling thread's count each time the guest calls getpriority(PRIO_PGRP, 8314887) (a pid above
 * any pid_max: it fails with ESRCH on a device and does nothing else). At exit it writes the
 * snapshots and the process total, one per line, to out=PATH. A snapshot counts only the thread
 * that set the marker, so a helper thread waking now and then does not move it.
 * Built by `edgecut target setup arm64`. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define MARK_WHO 8314887
#define MAX_MARKS 64
#define MAX_THREADS 4096

static uint64_t count;
static uint64_t per_thread[MAX_THREADS];
static uint64_t marks[MAX_MARKS];
static int n_marks;
static char out_path[4096];
static int64_t getpriority_nr = 141; /* aarch64 */

static void tb_exec(unsigned int vcpu, void *n)
{
    uint64_t k = (uint64_t)(uintptr_t)n;
    __atomic_fetch_add(&count, k, __ATOMIC_RELAXED);
    if (vcpu < MAX_THREADS) {
        per_thread[vcpu] += k; /* only that thread writes its slot */
    }
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    /* one count per instruction as it executes (a block left early counts only what ran) */
    size_t n = qemu_plugin_tb_n_insns(tb);
    for (size_t i = 0; i < n; i++) {
        qemu_plugin_register_vcpu_insn_exec_cb(qemu_plugin_tb_get_insn(tb, i), tb_exec, QEMU_PLUGIN_CB_NO_REGS,
                                               (void *)(uintptr_t)1);
    }
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, uint64_t a1, uint64_t a2,
                       uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8)
{
    if (num == getpriority_nr && a1 == 1 && a2 == MARK_WHO && n_marks < MAX_MARKS && vcpu < MAX_THREADS) {
        marks[n_marks++] = per_thread[vcpu];
    }
}

static void at_exit(qemu_plugin_id_t id, void *p)
{
    FILE *f = fopen(out_path, "w");
    if (!f) {
        return;
    }
    for (int i = 0; i < n_marks; i++) {
        fprintf(f, "mark %llu\n", (unsigned long long)marks[i]);
    }
    fprintf(f, "total %llu\n", (unsigned long long)__atomic_load_n(&count, __ATOMIC_RELAXED));
    fclose(f);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) == 0) {
            strncpy(out_path, argv[i] + 4, sizeof(out_path) - 1);
        }
    }
    if (!out_path[0] || strcmp(info->target_name, "aarch64") != 0) {
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
