// The control plane of the takeover, for the roles that speak it (gateway
// detector, primary agent, backup control endpoint, `t2cp takeover`,
// `t2cp stand-down`, `t2cp status`).
// Typical use, on the event loop that owns it:
//   const { key, warning } = loadKey(cfg.keyFile);          // once, at start
//   const ch = await Channel.open({ key, sender: 'backup:main', bind: { address: '0.0.0.0', port: 7391 } });
//   ch.onMessage(({ msg, from }) => { if (msg.type === 'TAKEOVER') ch.send(from, 'TAKEOVER_REPORT', report); });
//   ch.send(detector, 'BACKUP_HEARTBEAT', { state: 'standby', epoch });
//   await ch.close();
export { Channel, sameEndpoint, type ChannelCounters, type ChannelOptions, type Received, type Rejection } from './channel.js';
export { FakeClock, isoOfUs, systemClock, type Clock } from './clock.js';
export { loadKey, parseKey, MIN_KEY_BYTES, type LoadedKey } from './key.js';
export { decode, encode, DECODE_REJECTIONS, type DecodeRejection, type DecodeResult, type Message, type MessageOf } from './messages.js';
export { exchange, type ExchangeOptions, type ExchangeResult } from './request.js';
export { requestStandDown, type StandDownAck, type StandDownRequestOptions } from './stand-down-request.js';
export { requestTakeover, type TakeoverRequestOptions } from './takeover-request.js';
export { requestStatus, type StatusRequestOptions, type StatusRole } from './status-request.js';
export { ReplayGuard, REPLAY_REJECTIONS, DEFAULT_MAX_SKEW_US, type ReplayRejection } from './replay.js';
export {
  MessageType, BACKUP_STATES, DEVICE_STATES, PRIMARY_STATES, VRRP_HOOK_STATES,
  type ActiveSide, type AgentReport, type BackupState, type BodyOf, type DeviceState, type MessageTypeName,
  type ClusterView, type FlowCounts, type LiveFlows, type NodeStatus, type PrimaryState, type TakeoverReport, type TakeoverRequest, type VrrpHookState,
} from './bodies.js';
