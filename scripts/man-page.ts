// t2cp(8), written from the commands' own --help texts (src/config*.ts), so that the manual says
// what the program does: `node dist/scripts/man-page.js VERSION > t2cp.8` (scripts/package.sh).
import { backupHelp } from '../src/config.js';
import { EVENTS_COMMAND, GATEWAY_COMMAND, PRIMARY_COMMAND, STAND_DOWN_COMMAND, STATUS_COMMAND, TAKEOVER_COMMAND } from '../src/config-takeover.js';
import { helpText } from '../src/options.js';

const version = process.argv[2] ?? 'unknown';
/** roff: a backslash doubled, a line starting with a dot or a quote kept literal. */
const roff = (text: string): string => text.split('\n').map((l) => l.replace(/\\/g, '\\e').replace(/^([.'])/, '\\&$1')).join('\n');
const commands: [string, string][] = [
  ['backup', backupHelp()],
  ['gateway', helpText(GATEWAY_COMMAND)],
  ['primary', helpText(PRIMARY_COMMAND)],
  ['takeover', helpText(TAKEOVER_COMMAND)],
  ['stand-down', helpText(STAND_DOWN_COMMAND)],
  ['status', helpText(STATUS_COMMAND)],
  ['events', helpText(EVENTS_COMMAND)],
];

process.stdout.write([
  `.TH T2CP 8 "" "t2cp-ar ${version}" "System Administration"`,
  '.SH NAME',
  't2cp \\- client-transparent TCP and UDP active replication for Linux',
  '.SH SYNOPSIS',
  '.B t2cp',
  '.I command',
  '[options]',
  '.SH DESCRIPTION',
  'A backup server on a mirrored switch port replays every client flow of a primary into its own',
  'stack, so that an identical copy of the service computes the same state; its own replies are',
  'dropped. When the primary dies, the backup takes over the service address and the clients\'',
  'established connections carry on, byte-exact, with no reset. Three roles run it:',
  '.B t2cp backup',
  'on the backup host,',
  '.B t2cp primary',
  'on the primary host, and',
  '.B t2cp gateway',
  '(the failure detector and traffic recorder) on the gateway in front of both.',
  '.SH COMMANDS',
  ...commands.flatMap(([name, help]) => [`.SS ${name}`, '.nf', roff(help), '.fi']),
  '.SH FILES',
  '.TP',
  '.I /etc/t2cp/ROLE-INSTANCE.json',
  'the options of a role\'s instance (camelCase keys), read by the units below; examples in',
  '.IR /etc/t2cp/*-example.json .',
  '.TP',
  '.I /lib/systemd/system/t2cp-{backup,gateway,primary}@.service',
  'a unit per role; the instance names the configuration.',
  '.TP',
  '.I /usr/lib/ocf/resource.d/t2cp/t2cp',
  'the Pacemaker resource agent.',
  '.TP',
  '.I /usr/share/t2cp-ar/prometheus/t2cp.rules.yml',
  'example Prometheus alerting rules for the metrics every role serves with --metrics.',
  '.TP',
  '.I /var/lib/t2cp',
  'where the roles keep their state (--state-dir).',
  '.SH EXIT STATUS',
  '0 on success; 2 for a wrong option or configuration (the message names it and the fix);',
  '1 for anything else, with a one-line message.',
  '.SH SEE ALSO',
  '.BR systemd.service (5),',
  '.BR keepalived (8),',
  '.BR nft (8),',
  '.BR prometheus (1)',
  '',
].join('\n'));
