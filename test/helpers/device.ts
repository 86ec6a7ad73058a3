/** A test device: an ordinary MQTT client that publishes frames and collects its results. */
import mqtt from 'mqtt';
import { type DeviceResult, decodeDeviceResult, topicsFor } from '../../lib/protocol/index.js';

export type { DeviceResult };

export class TestDevice {
  readonly results: DeviceResult[] = [];
  private waiters: (() => void)[] = [];

  private constructor(
    readonly name: string,
    readonly client: mqtt.MqttClient,
    readonly pipeline: string,
  ) {}

  static async connect(url: string, pipeline: string, name: string): Promise<TestDevice> {
    // no reconnecting: a test device that lost its broker must not keep the test process alive
    const client = await mqtt.connectAsync(url, { protocolVersion: 4, reconnectPeriod: 0 });
    const d = new TestDevice(name, client, pipeline);
    client.on('message', (_t, p) => {
      d.results.push(decodeDeviceResult(p));
      for (const w of d.waiters.splice(0)) w();
    });
    await client.subscribeAsync(topicsFor(pipeline).deviceResults(name), { qos: 1 });
    return d;
  }

  publish(payload: Buffer | string, qos: 0 | 1 = 1): Promise<unknown> {
    return this.client.publishAsync(topicsFor(this.pipeline).frames(this.name), payload, { qos });
  }

  /** Wait until `n` results in all have arrived. */
  async waitFor(n: number, timeoutMs = 30_000): Promise<DeviceResult[]> {
    const until = Date.now() + timeoutMs;
    while (this.results.length < n) {
      if (Date.now() > until) throw new Error(`device ${this.name}: ${this.results.length} of ${n} results after ${timeoutMs} ms`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 200);
      });
    }
    return this.results.slice(0, n);
  }

  /** Publish and wait for its result. */
  async request(payload: Buffer | string): Promise<DeviceResult> {
    const n = this.results.length;
    await this.publish(payload);
    return (await this.waitFor(n + 1))[n];
  }

  private closing?: Promise<void>;

  close(): Promise<void> {
    this.closing ??= this.client.endAsync();
    return this.closing;
  }
}
