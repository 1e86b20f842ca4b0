/**
 * Process metrics read when /metrics is scraped, under the names of
 * prom-client's default metrics (prefixed `proxymapd_`): CPU, memory, file
 * descriptors, start time, V8 heap, event loop utilization, Node version.
 *
 * prom-client's own collectDefaultMetrics() is not used: it keeps a GC
 * PerformanceObserver and an event loop delay monitor running between
 * scrapes, and with the young generation kept small (--max-semi-space-size=2)
 * a busy server scavenges every few milliseconds. Measured with
 * `npm run bench -- --scenario texthash --metrics --loadgen node --conns 20`
 * it cost 6-14% of lookups/s at 20 connections (0.86x, 0.94x of the server
 * without metrics; 0.96x without it, within the noise). Everything here is
 * computed at scrape time and costs nothing in between; GC pause histograms
 * and event loop lag percentiles are therefore not offered.
 */
import fs from 'node:fs';
import v8 from 'node:v8';
import { performance } from 'node:perf_hooks';

export type MetricType = 'counter' | 'gauge';
export interface ProcessMetric {
  name: string;
  help: string;
  type: MetricType;
  values: () => Array<{ labels: Record<string, string>; value: number }>;
}

const startTimeSeconds = Math.round(Date.now() / 1000 - process.uptime());

/** The soft limit on open descriptors (/proc/self/limits), or undefined. */
function maxFds(): number | undefined {
  try {
    const m = /^Max open files\s+(\d+)/m.exec(fs.readFileSync('/proc/self/limits', 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

function openFds(): number | undefined {
  try {
    return fs.readdirSync('/proc/self/fd').length - 1; // less the descriptor of the directory being read
  } catch {
    return undefined;
  }
}

/** Virtual memory size from /proc/self/status, bytes. */
function virtualBytes(): number | undefined {
  try {
    const m = /^VmSize:\s+(\d+) kB/m.exec(fs.readFileSync('/proc/self/status', 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

const one = (value: number | undefined) => (value === undefined ? [] : [{ labels: {}, value }]);

/** The process metrics, each with a prefix (`proxymapd_`) before its name. */
export function processMetrics(prefix: string): ProcessMetric[] {
  let lastElu = performance.eventLoopUtilization();
  const cpu = () => process.cpuUsage();
  return [
    { name: 'process_cpu_user_seconds_total', help: 'User CPU time spent, seconds.', type: 'counter', values: () => one(cpu().user / 1e6) },
    { name: 'process_cpu_system_seconds_total', help: 'System CPU time spent, seconds.', type: 'counter', values: () => one(cpu().system / 1e6) },
    {
      name: 'process_cpu_seconds_total', help: 'User and system CPU time spent, seconds.', type: 'counter',
      values: () => { const c = cpu(); return one((c.user + c.system) / 1e6); },
    },
    { name: 'process_start_time_seconds', help: 'Start time of the process since the Unix epoch, seconds.', type: 'gauge', values: () => one(startTimeSeconds) },
    { name: 'process_resident_memory_bytes', help: 'Resident memory size, bytes.', type: 'gauge', values: () => one(process.memoryUsage.rss()) },
    { name: 'process_virtual_memory_bytes', help: 'Virtual memory size, bytes.', type: 'gauge', values: () => one(virtualBytes()) },
    { name: 'process_open_fds', help: 'Open file descriptors.', type: 'gauge', values: () => one(openFds()) },
    { name: 'process_max_fds', help: 'Limit on open file descriptors.', type: 'gauge', values: () => one(maxFds()) },
    { name: 'nodejs_heap_size_total_bytes', help: 'V8 heap size, bytes.', type: 'gauge', values: () => one(v8.getHeapStatistics().total_heap_size) },
    { name: 'nodejs_heap_size_used_bytes', help: 'V8 heap in use, bytes.', type: 'gauge', values: () => one(v8.getHeapStatistics().used_heap_size) },
    { name: 'nodejs_external_memory_bytes', help: 'Memory of C++ objects bound to JavaScript objects, bytes.', type: 'gauge', values: () => one(process.memoryUsage().external) },
    {
      name: 'nodejs_eventloop_utilization_ratio', help: 'Share of the time since the previous scrape the event loop was busy (0..1).', type: 'gauge',
      values: () => {
        const now = performance.eventLoopUtilization();
        const since = performance.eventLoopUtilization(now, lastElu);
        lastElu = now;
        return one(since.utilization);
      },
    },
    {
      name: 'nodejs_version_info', help: 'Node.js version.', type: 'gauge',
      values: () => [{ labels: { version: process.version, major: process.versions.node.split('.')[0]! }, value: 1 }],
    },
  ].map((m) => ({ ...m, name: prefix + m.name })) as ProcessMetric[];
}
