/** The QEMU command line of a micro-VM, and the marker that names its process. */
import { randomBytes } from "node:crypto";
import { storageArgs } from "../storage.js";
import type { VmSpawnOptions } from "./vm.js";

function sanitize(s: string): string {
  return s.replace(/[^A-Za-z0-9_.-]/g, "_").slice(0, 64);
}

export function makeMarker(runId = "probe", stage = "vm", attempt = 0): string {
  return `voidbox-${sanitize(runId)}-${sanitize(stage)}-${attempt}-${randomBytes(4).toString("hex")}`;
}

export function buildQemuArgs(
  o: Pick<VmSpawnOptions, "kernel" | "initramfs" | "accelerator" | "memoryMb" | "vcpus" | "network" | "machineOptions" | "storage"> & {
    kernelArgs: string[];
    marker: string;
    socketPath: string;
  },
): string[] {
  const storage = storageArgs(o.storage);
  const append = [...o.kernelArgs, ...(o.network ? ["voidbox.net=1"] : []), ...storage.kernel].join(" ");
  const args = [
    "-name", o.marker,
    "-M", `microvm,rtc=on${o.machineOptions ? `,${o.machineOptions}` : ""}`,
    // thread=single: measured faster to boot than multi-threaded TCG on 2 host cores.
    "-accel", o.accelerator === "kvm" ? "kvm" : "tcg,thread=single",
    "-nodefaults", "-no-user-config", "-nographic",
    "-monitor", "none",
    "-serial", "stdio",
    "-no-reboot",
    "-m", String(o.memoryMb),
    "-smp", String(o.vcpus),
    "-kernel", o.kernel,
    "-initrd", o.initramfs,
    "-append", append,
    "-device", "virtio-serial-device",
    "-chardev", `socket,id=vbxch,path=${o.socketPath}`,
    "-device", "virtserialport,chardev=vbxch,name=voidbox.0",
  ];
  if (o.network) {
    args.push("-netdev", "user,id=vbxnet", "-device", "virtio-net-device,netdev=vbxnet");
  }
  args.push(...storage.qemu);
  return args;
}
