// Native test of the outgoing traffic processor's owned nftables tables
// (addon/outgoing_nftables.cc). Runs as root inside a scratch network
// namespace made by nftables_test.sh, where lo is up and carries kVip.
// Verification goes through the `nft` tool on purpose: an independent reader
// of what the kernel holds.
#include "outgoing_nftables.h"
#include "nft_batch.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

using t2cp::NftConfig;
using t2cp::NftStatus;
using t2cp::NftTables;

namespace {

int g_passed = 0, g_failed = 0;

#define CHECK(cond)                                                        \
  do {                                                                     \
    if (cond) {                                                            \
      ++g_passed;                                                          \
    } else {                                                               \
      ++g_failed;                                                          \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                      \
  } while (0)

const char kVipText[] = "198.18.1.10";   // put on lo by nftables_test.sh
constexpr uint16_t kQueuedPort = 8080;
constexpr uint16_t kOtherQueuedPort = 8081;
constexpr uint16_t kFreePort = 8090;    // not in any table
constexpr uint16_t kQueueNum = 7;
constexpr int kConnectTimeoutMs = 1000;  // SYN-ACK retransmits after 1 s

uint32_t vip() { return inet_addr(kVipText); }

std::string sh(const std::string& cmd) {
  std::string out;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  pclose(p);
  return out;
}

bool has(const std::string& s, const std::string& sub) {
  return s.find(sub) != std::string::npos;
}

NftConfig config(const std::string& table) {
  NftConfig c;
  c.table = table;
  c.vip = vip();
  c.ports = {kQueuedPort, kOtherQueuedPort};
  c.queue_num = kQueueNum;
  return c;
}

bool tables_listed(const std::string& name) {
  std::string t = sh("nft list tables");
  return has(t, "table ip " + name + "\n") && has(t, "table arp " + name + "\n");
}

bool tables_gone(const std::string& name) {
  return !has(sh("nft list tables"), " " + name + "\n");
}

// Polls cond every 20 ms until it holds or deadline_ms passes.
template <typename F>
bool eventually(F cond, int deadline_ms) {
  for (int waited = 0;; waited += 20) {
    if (cond()) return true;
    if (waited >= deadline_ms) return false;
    usleep(20 * 1000);
  }
}

int listen_on(uint32_t addr, uint16_t port, uint32_t mark = 0) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (mark) setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof mark);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = addr;
  a.sin_port = htons(port);
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0 ||
      listen(fd, 16) < 0) {
    perror("listen_on");
    close(fd);
    return -1;
  }
  return fd;
}

// Non-blocking connect from 127.0.0.1 to addr:port; true if the handshake
// completes within timeout_ms. The SYN (sport ephemeral) is never matched;
// the listener's SYN-ACK (saddr VIP, sport port) is what the table queues.
bool connects(uint32_t addr, uint16_t port, int timeout_ms) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  sockaddr_in src{};
  src.sin_family = AF_INET;
  src.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&src), sizeof src);
  sockaddr_in dst{};
  dst.sin_family = AF_INET;
  dst.sin_addr.s_addr = addr;
  dst.sin_port = htons(port);
  bool ok = false;
  int r = connect(fd, reinterpret_cast<sockaddr*>(&dst), sizeof dst);
  if (r == 0) {
    ok = true;
  } else if (errno == EINPROGRESS) {
    pollfd p{fd, POLLOUT, 0};
    if (poll(&p, 1, timeout_ms) == 1) {
      int soerr = 0;
      socklen_t len = sizeof soerr;
      getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
      ok = soerr == 0;
    }
  }
  close(fd);
  return ok;
}

void test_bad_config() {
  NftTables t;
  std::string err;
  NftConfig c = config("t2nf_bad");
  c.ports.clear();
  CHECK(t.install(c, &err) == NftStatus::kError);
  CHECK(has(err, "ports"));

  c = config("t2nf_bad");
  c.ports.assign(65, 0);
  for (int i = 0; i < 65; ++i) c.ports[i] = uint16_t(1000 + i);
  CHECK(t.install(c, &err) == NftStatus::kError);

  c = config("bad name!");
  CHECK(t.install(c, &err) == NftStatus::kError);
  CHECK(has(err, "table name"));

  c = config(std::string(32, 'a'));
  CHECK(t.install(c, &err) == NftStatus::kError);

  c = config("");
  CHECK(t.install(c, &err) == NftStatus::kError);

  c = config("t2nf_bad");
  c.vip = 0;
  CHECK(t.install(c, &err) == NftStatus::kError);
  CHECK(has(err, "vip"));

  c = config("t2nf_bad");
  c.ports = {80, 80};
  CHECK(t.install(c, &err) == NftStatus::kError);

  CHECK(!t.installed());
  CHECK(tables_gone("t2nf_bad"));
}

void test_install_listing_and_function() {
  const std::string name = "t2nf_main";
  // Listeners exist before the table: the connects below only differ by it.
  int queued = listen_on(vip(), kQueuedPort);
  int free_port = listen_on(vip(), kFreePort);
  int marked = listen_on(vip(), kOtherQueuedPort, t2cp::kInjectMark);
  CHECK(queued >= 0 && free_port >= 0 && marked >= 0);
  CHECK(connects(vip(), kQueuedPort, kConnectTimeoutMs));   // baseline

  NftTables t;
  std::string err;
  NftStatus s = t.install(config(name), &err);
  CHECK(s == NftStatus::kOk);
  if (s != NftStatus::kOk) fprintf(stderr, "install: %s\n", err.c_str());
  CHECK(t.installed());
  CHECK(!t.removed_stale());
  CHECK(tables_listed(name));

  std::string ip = sh("nft list table ip " + name);
  CHECK(has(ip, "type filter hook output priority mangle; policy accept;"));
  CHECK(has(ip, "meta mark 0x00005432 accept"));
  CHECK(has(ip, "flags owner"));
  CHECK(has(ip, "ip saddr 198.18.1.10 tcp sport 8080 counter"));
  CHECK(has(ip, "ip saddr 198.18.1.10 tcp sport 8081 counter"));
  CHECK(has(ip, "queue num 7"));   // nft's reading of the xt NFQUEUE target
  // Exact encoding of the compat target, as the kernel reports it back.
  std::string dbg = sh("nft --debug=netlink list table ip " + name);
  size_t targets = 0;
  for (size_t at = 0; (at = dbg.find("[ target name NFQUEUE rev 3 ]", at)) !=
                      std::string::npos; ++at)
    ++targets;
  CHECK(targets == 2);
  CHECK(has(dbg, "[ cmp eq reg 1 0x00005432 ]"));
  CHECK(has(dbg, "[ payload load 2b @ transport header + 0 => reg 1 ]"));
  CHECK(has(dbg, "[ cmp eq reg 1 0x0a0112c6 ]"));   // 198.18.1.10, network order

  std::string arp = sh("nft list table arp " + name);
  CHECK(has(arp, "type filter hook output priority filter; policy accept;"));
  CHECK(has(sh("nft --debug=netlink list table arp " + name),
            "[ payload load 4b @ network header + 14 => reg 1 ]"));
  CHECK(has(arp, "flags owner"));
  CHECK(has(arp, "arp saddr ip 198.18.1.10 counter"));
  CHECK(has(arp, "drop"));

  // Nobody is bound to queue 7 and there is no bypass: the listener's
  // SYN-ACK is dropped, the connect never completes.
  CHECK(!connects(vip(), kQueuedPort, kConnectTimeoutMs));
  // The guard: nothing else leaves from the VIP while the backup replicates
  // (the VIP is the primary's), a port not replicated either.
  CHECK(!connects(vip(), kFreePort, kConnectTimeoutMs));
  CHECK(has(ip, "chain guard"));
  CHECK(has(ip, "ip saddr 198.18.1.10 counter"));
  // The listener on 8081 marks its packets with kInjectMark: exempt.
  CHECK(connects(vip(), kOtherQueuedPort, kConnectTimeoutMs));

  // A second install on the same object is refused, the first is intact.
  CHECK(t.install(config(name), &err) == NftStatus::kError);
  CHECK(tables_listed(name));

  t.remove();
  CHECK(!t.installed());
  CHECK(tables_gone(name));
  CHECK(connects(vip(), kQueuedPort, kConnectTimeoutMs));
  t.remove();   // idempotent
  CHECK(!t.installed());

  // The object can install again after remove().
  CHECK(t.install(config(name), &err) == NftStatus::kOk);
  CHECK(tables_listed(name));
  t.remove();
  CHECK(tables_gone(name));

  close(queued);
  close(free_port);
  close(marked);
}

void test_all_64_ports() {
  const std::string name = "t2nf_wide";
  NftConfig c = config(name);
  c.ports.clear();
  for (uint16_t p = 20000; p < 20064; ++p) c.ports.push_back(p);
  NftTables t;
  std::string err;
  CHECK(t.install(c, &err) == NftStatus::kOk);
  if (!err.empty()) fprintf(stderr, "install 64: %s\n", err.c_str());
  std::string ip = sh("nft list table ip " + name);
  CHECK(has(ip, "tcp sport 20000 "));
  CHECK(has(ip, "tcp sport 20063 "));
  t.remove();
  CHECK(tables_gone(name));
}

// The kernel deletes owned tables when the owning socket closes, even on
// SIGKILL.
void test_owner_dies() {
  const std::string name = "t2nf_owner";
  int pipefd[2];
  if (pipe(pipefd) != 0) { CHECK(false); return; }
  pid_t child = fork();
  if (child == 0) {
    close(pipefd[0]);
    NftTables t;
    std::string err;
    char ok = t.install(config(name), &err) == NftStatus::kOk ? 1 : 0;
    if (write(pipefd[1], &ok, 1) != 1) _exit(2);
    for (;;) pause();
  }
  close(pipefd[1]);
  char ok = 0;
  CHECK(read(pipefd[0], &ok, 1) == 1 && ok == 1);
  close(pipefd[0]);
  CHECK(tables_listed(name));
  kill(child, SIGKILL);
  int status = 0;
  CHECK(waitpid(child, &status, 0) == child);
  CHECK(eventually([&] { return tables_gone(name); }, 1000));
}

// A table held by a live socket is reported, not stolen.
void test_busy() {
  const std::string name = "t2nf_busy";
  NftTables first, second;
  std::string err;
  CHECK(first.install(config(name), &err) == NftStatus::kOk);
  CHECK(second.install(config(name), &err) == NftStatus::kBusy);
  CHECK(has(err, "owned by another running t2cp instance"));
  CHECK(has(err, "pid " + std::to_string(getpid())));
  fprintf(stderr, "busy message: %s\n", err.c_str());
  CHECK(!second.installed());
  CHECK(first.installed());
  CHECK(tables_listed(name));
  CHECK(has(sh("nft list table ip " + name), "tcp sport 8080"));
  second.remove();   // a no-op: must not touch first's tables
  CHECK(tables_listed(name));
  first.remove();
  CHECK(tables_gone(name));
}

// An unowned leftover (older build, manual nft -f) is replaced.
void test_stale() {
  const std::string name = "t2nf_stale";
  sh("nft add table ip " + name);
  sh("nft add table arp " + name);
  CHECK(has(sh("nft list tables"), "table ip " + name));
  NftTables t;
  std::string err;
  CHECK(t.install(config(name), &err) == NftStatus::kOk);
  if (!err.empty()) fprintf(stderr, "install stale: %s\n", err.c_str());
  CHECK(t.removed_stale());
  CHECK(has(sh("nft list table ip " + name), "tcp sport 8080"));
  t.remove();
  CHECK(tables_gone(name));

  // Only the ip one stale: still replaced; the flag resets on the next run.
  sh("nft add table ip " + name);
  CHECK(t.install(config(name), &err) == NftStatus::kOk);
  CHECK(t.removed_stale());
  t.remove();
  CHECK(t.install(config(name), &err) == NftStatus::kOk);
  CHECK(!t.removed_stale());
  t.remove();
  CHECK(tables_gone(name));
}

// Without CAP_NET_ADMIN the kernel answers EPERM: kPermission, not kBusy.
void test_permission() {
  int pipefd[2];
  if (pipe(pipefd) != 0) { CHECK(false); return; }
  pid_t child = fork();
  if (child == 0) {
    close(pipefd[0]);
    if (setgid(65534) != 0 || setuid(65534) != 0) _exit(2);   // nobody
    NftTables t;
    std::string err;
    NftStatus st = t.install(config("t2nf_perm"), &err);
    std::string msg = std::to_string(int(st)) + " " + err;
    if (write(pipefd[1], msg.data(), msg.size()) < 0) _exit(3);
    _exit(0);
  }
  close(pipefd[1]);
  char buf[512] = {};
  ssize_t n = read(pipefd[0], buf, sizeof buf - 1);
  close(pipefd[0]);
  int status = 0;
  waitpid(child, &status, 0);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  std::string msg(buf, n > 0 ? size_t(n) : 0);
  CHECK(msg.rfind(std::to_string(int(NftStatus::kPermission)) + " ", 0) == 0);
  CHECK(has(msg, "needs root (CAP_NET_ADMIN)"));
  CHECK(tables_gone("t2nf_perm"));
}

void test_destructor_removes() {
  const std::string name = "t2nf_dtor";
  {
    NftTables t;
    std::string err;
    CHECK(t.install(config(name), &err) == NftStatus::kOk);
    CHECK(tables_listed(name));
  }
  CHECK(tables_gone(name));
}

// A UDP socket bound to addr:port (network order address), or -1.
int udp_on(uint32_t addr, uint16_t port) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = addr;
  a.sin_port = htons(port);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    if (fd >= 0) close(fd);
    return -1;
  }
  return fd;
}

// What fd receives within 1 s (its text and the sender's port), "" when nothing.
std::string udp_recv(int fd, uint16_t* from_port) {
  pollfd p{fd, POLLIN, 0};
  if (poll(&p, 1, 1000) != 1) return "";
  char buf[256];
  sockaddr_in a{};
  socklen_t al = sizeof a;
  ssize_t n = recvfrom(fd, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&a), &al);
  *from_port = ntohs(a.sin_port);
  return n > 0 ? std::string(buf, size_t(n)) : "";
}

void udp_send(int fd, uint32_t addr, uint16_t port, const std::string& text) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = addr;
  a.sin_port = htons(port);
  sendto(fd, text.data(), text.size(), 0, reinterpret_cast<sockaddr*>(&a), sizeof a);
}

// After a takeover, a media relay's association (relay_ports.h): the phone keeps sending to
// the primary's relay port and reaches the replica's relay on its own port; what the relay
// sends back leaves from the primary's port. Another phone's datagrams are left alone.
// Looked up in a map: the listing names the associations. With the queue translator (rules
// kQueueBoth) the replica's UDP output is still queued after the map; translated, it is accepted
// first (nobody reads the queue here: a datagram queued would be lost).
void test_relay_ports_translated(NftTables::ActiveRules rules) {
  const std::string name = "t2nf_relay";
  const uint32_t phone = inet_addr("198.18.0.2"), other = inet_addr("198.18.0.3");
  constexpr uint16_t kPhonePort = 6000, kPrimaryPort = 30018, kReplicaPort = 30042;
  NftConfig c = config(name);
  c.udp_ports = {30000};
  for (uint16_t p = 30001; p < 30100; p++) c.udp_ports.push_back(p);
  NftTables t;
  std::string err;
  CHECK(t.install(c, &err) == NftStatus::kOk);
  t2cp::NftRelay r;
  r.client_ip = phone;
  r.client_port = kPhonePort;
  r.primary_port = kPrimaryPort;
  r.replica_port = kReplicaPort;
  // Other calls' associations before it: the map spans several messages of the batch.
  std::vector<t2cp::NftRelay> associations;
  for (uint16_t i = 0; i < 3 * t2cp::nft::kMapElementsPerMsg; i++)
    associations.push_back({other, uint16_t(7000 + i), uint16_t(30000 + i % 50), 30099});
  associations.push_back(r);
  const bool active = t.enter_active(rules, 0, {}, associations, &err);
  CHECK(active);
  if (!active) fprintf(stderr, "enter_active: %s\n", err.c_str());
  const std::string ip = sh("nft list table ip " + name);
  CHECK(has(ip, "ip daddr 198.18.1.10 meta l4proto udp counter packets 0 bytes 0 udp dport set ip saddr . udp sport . udp dport map {"));
  CHECK(has(ip, "198.18.0.2 . 6000 . 30018 : 30042"));
  CHECK(has(ip, "udp sport set ip daddr . udp dport . udp sport map {"));
  CHECK(has(ip, "198.18.0.2 . 6000 . 30042 : 30018"));
  // Both maps' rules end in accept.
  size_t accepts = 0;
  for (size_t at = ip.find("} accept"); at != std::string::npos; at = ip.find("} accept", at + 1)) accepts++;
  CHECK(accepts == 2);
  int relay = udp_on(vip(), kReplicaPort), from = udp_on(phone, kPhonePort), stranger = udp_on(other, kPhonePort);
  CHECK(relay >= 0 && from >= 0 && stranger >= 0);
  uint16_t port = 0;
  udp_send(from, vip(), kPrimaryPort, "rtp to the primary's port");
  CHECK(udp_recv(relay, &port) == "rtp to the primary's port");
  CHECK(port == kPhonePort);
  udp_send(relay, phone, kPhonePort, "rtp back");
  CHECK(udp_recv(from, &port) == "rtp back");
  CHECK(port == kPrimaryPort);
  udp_send(stranger, vip(), kPrimaryPort, "not its association");
  CHECK(udp_recv(relay, &port).empty());
  for (int fd : {relay, from, stranger})
    if (fd >= 0) close(fd);
  t.remove();
}

}  // namespace

int main() {
  if (geteuid() != 0) {
    fprintf(stderr, "nftables_test: needs root inside a scratch netns\n");
    printf("0 passed, 1 failed\n");
    return 1;
  }
  test_bad_config();
  test_install_listing_and_function();
  test_all_64_ports();
  test_owner_dies();
  test_busy();
  test_stale();
  test_destructor_removes();
  test_permission();
  test_relay_ports_translated(NftTables::ActiveRules::kNone);
  test_relay_ports_translated(NftTables::ActiveRules::kQueueBoth);
  CHECK(!has(sh("nft list ruleset"), "t2nf_"));
  printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed ? 1 : 0;
}
