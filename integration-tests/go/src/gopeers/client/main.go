// Command client does what a go-pantheon (fabrica-net) client does against a gateway, for
// testing Janus against a real Go peer: it mints a Lares-style token itself, runs the legacy
// (go-pantheon v1) handshake, then a heartbeat, an echo, an echo the server must compress and
// an echo followed by a push, keeping go-pantheon's request-index rule; over TCP, WebSocket
// (gorilla, one binary message per frame) or KCP (kcp-go with FEC and smux v2 on top, with
// fabrica-net's settings; each switchable off).
//
// Flags (all optional except -addr, -server-pub and one of the token keys):
//
//	-transport tcp|ws|kcp   transport (tcp)
//	-addr ADDR              host:port; for ws also a ws:// URL (host:port means ws://host:port/ws)
//	-server-pub FILE        the server's Ed25519 key: a PEM PUBLIC KEY (PKIX) or CERTIFICATE
//	-token-key STRING       the Lares token key: the raw bytes of the string (16, 24 or 32 → AES-128/192/256-GCM)
//	-token-key-hex HEX      the same key written in hex
//	-uid N                  account id (1); with smux, stream i logs in as uid+i
//	-color S                token color ("")
//	-sid N                  CSHandshake.server_id (0)
//	-token-sid N            AuthToken.server_id (0, as Lares issues it)
//	-status N               AuthToken.status (1, GATE)
//	-token-ttl D            token lifetime (10m, as Lares issues them)
//	-client-key FILE        PKCS#8 Ed25519 key to sign the client's X25519 key with (unsigned without)
//	-fec=BOOL               KCP: Reed-Solomon FEC (true)
//	-data-shards N          KCP FEC data shards (10)
//	-parity-shards N        KCP FEC parity shards (3)
//	-smux=BOOL              KCP: smux v2 streams over the session (true)
//	-streams N              KCP with smux: streams opened, one session on each (2)
//	-compress-size N        bytes of the echo the server must compress (12000; go-pantheon compresses ≥ 10240)
//	-push=BOOL              run the echo-then-push check (seq 100, the demo game's and the Go roma peer's) (true)
//	-timeout D              limit of each step (10s)
//	-await-pushes N         after the checks, stay connected until N server pushes arrived on each session (0)
//	-await-timeout D        with -await-pushes: limit of the whole wait, per session (30s)
//
// Output: one JSON object per line per passed check, with "check" naming it ("handshake",
// "heartbeat", "echo", "compressed", "push") and "session" its session number (0, or the smux
// stream), then {"check":"done"}. With -await-pushes each session then prints
// {"check":"ready","uid":U} (from here on it takes pushes) and one
// {"check":"received","n":K,"uid":U,"mod":…,"seq":…,"obj":…,"data":"…"} per push (K from 1;
// data as text), and fails if fewer than N came within -await-timeout. On any failure it prints
// the reason on stderr and exits 1.
package main

import (
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io/ioutil"
	"os"
	"sync"
	"time"
)

type options struct {
	transport    string
	addr         string
	serverPub    ed25519.PublicKey
	clientKey    ed25519.PrivateKey
	tokenKey     []byte
	uid          int64
	color        string
	sid          int64
	tokenSid     int64
	status       int
	tokenTTL     time.Duration
	fec          bool
	dataShards   int
	parityShards int
	smux         bool
	streams      int
	compressSize int
	push         bool
	timeout      time.Duration
	awaitPushes  int
	awaitTimeout time.Duration
}

// report writes check lines; safe for the sessions of several smux streams.
type report struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func (r *report) check(name string, session int, fields map[string]interface{}) {
	line := map[string]interface{}{"check": name, "session": session}
	for k, v := range fields {
		line[k] = v
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	_ = r.enc.Encode(line)
}

func main() {
	var o options
	var serverPub, clientKey, tokenKey, tokenKeyHex string
	flag.StringVar(&o.transport, "transport", "tcp", "tcp, ws or kcp")
	flag.StringVar(&o.addr, "addr", "", "server address")
	flag.StringVar(&serverPub, "server-pub", "", "PEM file: the server's Ed25519 public key or certificate")
	flag.StringVar(&clientKey, "client-key", "", "PEM file: PKCS#8 Ed25519 key signing the client's X25519 key")
	flag.StringVar(&tokenKey, "token-key", "", "Lares token key, raw string of 16, 24 or 32 bytes")
	flag.StringVar(&tokenKeyHex, "token-key-hex", "", "Lares token key in hex")
	flag.Int64Var(&o.uid, "uid", 1, "account id")
	flag.StringVar(&o.color, "color", "", "token color")
	flag.Int64Var(&o.sid, "sid", 0, "CSHandshake.server_id")
	flag.Int64Var(&o.tokenSid, "token-sid", 0, "AuthToken.server_id")
	flag.IntVar(&o.status, "status", 1, "AuthToken.status")
	flag.DurationVar(&o.tokenTTL, "token-ttl", 10*time.Minute, "token lifetime")
	flag.BoolVar(&o.fec, "fec", true, "KCP: FEC")
	flag.IntVar(&o.dataShards, "data-shards", 10, "KCP FEC data shards")
	flag.IntVar(&o.parityShards, "parity-shards", 3, "KCP FEC parity shards")
	flag.BoolVar(&o.smux, "smux", true, "KCP: smux v2 streams")
	flag.IntVar(&o.streams, "streams", 2, "KCP with smux: streams to open")
	flag.IntVar(&o.compressSize, "compress-size", 12000, "size of the echo the server must compress")
	flag.BoolVar(&o.push, "push", true, "run the echo-then-push check")
	flag.DurationVar(&o.timeout, "timeout", 10*time.Second, "limit of each step")
	flag.IntVar(&o.awaitPushes, "await-pushes", 0, "after the checks, wait for this many server pushes per session")
	flag.DurationVar(&o.awaitTimeout, "await-timeout", 30*time.Second, "limit of the wait for -await-pushes")
	flag.Parse()

	if o.addr == "" {
		fatal("-addr is required")
	}
	if serverPub == "" {
		fatal("-server-pub is required")
	}
	pem, err := ioutil.ReadFile(serverPub)
	if err != nil {
		fatal("-server-pub: %v", err)
	}
	if o.serverPub, err = parseServerKey(pem); err != nil {
		fatal("-server-pub %s: %v", serverPub, err)
	}
	if clientKey != "" {
		pem, err := ioutil.ReadFile(clientKey)
		if err != nil {
			fatal("-client-key: %v", err)
		}
		if o.clientKey, err = parseClientKey(pem); err != nil {
			fatal("-client-key %s: %v", clientKey, err)
		}
	}
	switch {
	case tokenKey != "" && tokenKeyHex != "":
		fatal("give -token-key or -token-key-hex, not both")
	case tokenKey != "":
		o.tokenKey = []byte(tokenKey)
	case tokenKeyHex != "":
		if o.tokenKey, err = hex.DecodeString(tokenKeyHex); err != nil {
			fatal("-token-key-hex: %v", err)
		}
	default:
		fatal("-token-key or -token-key-hex is required")
	}
	if n := len(o.tokenKey); n != 16 && n != 24 && n != 32 {
		fatal("the token key is %d bytes; AES-GCM needs 16, 24 or 32", n)
	}

	conns, closeAll, err := dial(&o)
	if err != nil {
		fatal("%s %s: %v", o.transport, o.addr, err)
	}
	defer closeAll()

	r := &report{enc: json.NewEncoder(os.Stdout)}
	errs := make(chan error, len(conns))
	for i, c := range conns {
		go func(i int, c frameConn) {
			errs <- run(&o, r, i, o.uid+int64(i), c)
		}(i, c)
	}
	for range conns {
		if err := <-errs; err != nil {
			closeAll()
			fatal("%v", err)
		}
	}
	r.check("done", 0, map[string]interface{}{"sessions": len(conns), "transport": o.transport})
}

func fatal(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "client: "+format+"\n", args...)
	os.Exit(1)
}
