// Command roma is a game service on grpc-go written the way go-pantheon's Roma writes its tunnel
// handlers, for testing Janus against a real Go peer instead of only against its own tonic
// demo game.
//
// Like Roma it serves player.intra.v1.TunnelService/Tunnel and room.intra.v1.TunnelService/Tunnel
// as bidirectional streams; on each stream it reads the x-md-global-* metadata, refuses a
// stream whose status is not GATE (1) and one whose oid is not an int64, then receives a
// request, sends the reply and pushes on the stream. It never calls SendHeader, so grpc-go
// sends the stream's response headers only with its first message, as Roma's do.
//
// What it answers is what the demo game (broker/demo/src/lib.rs) answers, so the same suites run
// against either: player requests are echoed (same mod, seq, obj, index, data), seq 100 is
// echoed and then followed by a push on the stream (index 0, data "pushed"); System
// heartbeats (mod 1, seq 2) are answered as Roma answers them (game clock, ±30 s window, the
// first heartbeat of a tunnel always Succeeded, reply obj = request obj, which the gateway has
// made the uid). Room requests (mod 6, obj = room id): seq 1 joins, 2 leaves, 3 says data to
// the room: the other members get a push (seq 4, "<uid>: <text>") through
// broadcaster.service.push.v1.PushService/Multicast on the broker given by -push, called with
// a grpc-go client; every room request is answered with data "ok" (or the push error).
//
// With -kick-conflicts it also does what Roma's worker manager does with a second gate tunnel
// for an object that already has one (a gate worker is never reused): the older stream gets a
// push of SCServerLogout{ConflictingLogin} and ends. It is off by default because the demo
// game's rooms (obj = room id, one stream per member) cannot live with it.
//
// With -tls-ca, -tls-cert and -tls-key both of its links are mutual TLS as Janus's internal
// links are (PROTOCOL.md §15): it serves the tunnels only to clients whose certificate, issued
// by the CA, names broker.janus.internal, and pushes to a broker whose certificate names it,
// presenting its own (which names game.janus.internal), with crypto/tls and grpc-go's
// credentials as a Roma built with TLS would.
//
// Output: the bound address alone on the first stdout line, then one JSON object per line for
// what a test may assert on (see event). It exits when stdin closes or on SIGTERM.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"net"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"gopeers/wire"
)

// Metadata keys Roma reads from a tunnel (fabrica-kit's xcontext keys).
var metadataKeys = []string{
	"x-md-global-oid", "x-md-global-uid", "x-md-global-sid", "x-md-global-status",
	"x-md-global-color", "x-md-global-client-ip", "x-md-global-referer", "x-md-global-gate-referer",
}

// Module and sequence numbers (PROTOCOL.md "Envelope"; demo game).
const (
	modSystem    = 1
	seqHeartbeat = 2
	modRoom      = 6
	seqEchoPush  = 100
	seqJoin      = 1
	seqLeave     = 2
	seqSay       = 3
	seqSaid      = 4
	seqLogout    = 4
	// logoutConflictingLogin is SCServerLogout.Code ConflictingLogin.
	logoutConflictingLogin = 3
	// heartbeatWindow is Roma's MaxOffsetSec.
	heartbeatWindow = 30
)

// event is one stdout line. Event names:
//   - "stream": a tunnel stream opened (Service "player" or "room", Metadata as Roma reads it:
//     the first value of each x-md-global-* key, "" when absent);
//   - "rejected": a stream refused (Error says why, as Roma's error text);
//   - "heartbeat": a heartbeat answered (ClientTime, ServerTime, Code);
//   - "multicast": a room push sent (UIDs asked, Pushed = the broker's pushed_uids, Error);
//   - "kicked": with -kick-conflicts, a stream ended by a newer one for the same object;
//   - "end": a stream ended (Error is empty when the gateway closed it cleanly).
type event struct {
	Event      string            `json:"event"`
	Service    string            `json:"service,omitempty"`
	Metadata   map[string]string `json:"metadata,omitempty"`
	Oid        int64             `json:"oid,omitempty"`
	Error      string            `json:"error,omitempty"`
	ClientTime int64             `json:"client_time,omitempty"`
	ServerTime int64             `json:"server_time,omitempty"`
	Code       int32             `json:"code,omitempty"`
	UIDs       []int64           `json:"uids,omitempty"`
	Pushed     []int64           `json:"pushed,omitempty"`
}

type output struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func (o *output) emit(e event) {
	o.mu.Lock()
	defer o.mu.Unlock()
	_ = o.enc.Encode(e)
}

type roomKey struct {
	color string
	room  int64
}

type game struct {
	out         *output
	push        *grpc.ClientConn
	clockOffset time.Duration

	mu      sync.Mutex
	members map[roomKey]map[int64]bool

	// kickConflicts: live streams by service and object, when -kick-conflicts is on.
	kickConflicts bool
	liveMu        sync.Mutex
	live          map[string]map[int64]*tunnelState
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "gRPC listen address")
	push := flag.String("push", "", "host:port of the broker's broadcaster.service.push.v1.PushService (room pushes)")
	clockOffset := flag.Duration("clock-offset", 0, "the game clock's offset from the system clock (heartbeat server_time)")
	kickConflicts := flag.Bool("kick-conflicts", false, "a newer tunnel for an object ends the older one with SCServerLogout, as Roma's workers do")
	tlsCA := flag.String("tls-ca", "", "the deployment CA (PEM): serve and push over mutual TLS")
	tlsCert := flag.String("tls-cert", "", "this service's certificate (PEM), naming game.janus.internal")
	tlsKey := flag.String("tls-key", "", "its key (PEM)")
	flag.Parse()
	if *push == "" {
		fatal("-push is required")
	}
	pushCreds := grpc.WithInsecure()
	options := []grpc.ServerOption{grpc.CustomCodec(wire.Codec{})}
	if *tlsCA != "" {
		server, client := mutualTLS(*tlsCA, *tlsCert, *tlsKey)
		options = append(options, grpc.Creds(credentials.NewTLS(server)))
		pushCreds = grpc.WithTransportCredentials(credentials.NewTLS(client))
	}

	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		fatal("listen %s: %v", *listen, err)
	}
	conn, err := grpc.Dial(*push, pushCreds,
		grpc.WithDefaultCallOptions(grpc.ForceCodec(wire.Codec{})))
	if err != nil {
		fatal("dial push %s: %v", *push, err)
	}
	g := &game{
		out:         &output{enc: json.NewEncoder(os.Stdout)},
		push:        conn,
		clockOffset: *clockOffset,
		members:     map[roomKey]map[int64]bool{},

		kickConflicts: *kickConflicts,
		live:          map[string]map[int64]*tunnelState{"player": {}, "room": {}},
	}
	srv := grpc.NewServer(options...)
	for _, svc := range []string{"player", "room"} {
		srv.RegisterService(&grpc.ServiceDesc{
			ServiceName: svc + ".intra.v1.TunnelService",
			HandlerType: (*interface{})(nil),
			Streams: []grpc.StreamDesc{{
				StreamName:    "Tunnel",
				Handler:       g.tunnel(svc),
				ServerStreams: true,
				ClientStreams: true,
			}},
		}, struct{}{})
	}
	fmt.Println(lis.Addr().String())

	go func() {
		_, _ = io.Copy(ioutil.Discard, os.Stdin)
		srv.Stop()
	}()
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		srv.Stop()
	}()
	if err := srv.Serve(lis); err != nil {
		fatal("serve: %v", err)
	}
}

// mutualTLS builds the server side (clients must present a certificate from the CA naming
// broker.janus.internal) and the client side (the server must present one naming it) of the
// peer's TLS.
func mutualTLS(caFile, certFile, keyFile string) (server, client *tls.Config) {
	ca, err := ioutil.ReadFile(caFile)
	if err != nil {
		fatal("tls-ca: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		fatal("tls-ca %s: no certificate", caFile)
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		fatal("tls-cert/tls-key: %v", err)
	}
	const broker = "broker.janus.internal"
	server = &tls.Config{
		Certificates: []tls.Certificate{pair},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
		VerifyConnection: func(state tls.ConnectionState) error {
			if len(state.PeerCertificates) == 0 || state.PeerCertificates[0].VerifyHostname(broker) != nil {
				return errors.New("the client's certificate does not name " + broker)
			}
			return nil
		},
	}
	client = &tls.Config{
		Certificates: []tls.Certificate{pair},
		RootCAs:      pool,
		ServerName:   broker,
		MinVersion:   tls.VersionTLS12,
	}
	return server, client
}

func fatal(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "roma: "+format+"\n", args...)
	os.Exit(1)
}

// tunnel is the stream handler of service svc ("player" or "room").
func (g *game) tunnel(svc string) grpc.StreamHandler {
	return func(_ interface{}, stream grpc.ServerStream) (err error) {
		md, _ := metadata.FromIncomingContext(stream.Context())
		seen := make(map[string]string, len(metadataKeys))
		for _, k := range metadataKeys {
			if v := md.Get(k); len(v) > 0 {
				seen[k] = v[0]
			} else {
				seen[k] = ""
			}
		}
		g.out.emit(event{Event: "stream", Service: svc, Metadata: seen})

		// Roma: life.IsGateContext, then xcontext.OID; a status that does not parse counts as 0.
		status, _ := strconv.ParseInt(seen["x-md-global-status"], 10, 64)
		if status != int64(wire.StatusGate) {
			return g.reject(svc, fmt.Errorf("must be called by Gateway. status=%d", status))
		}
		oid, err := strconv.ParseInt(seen["x-md-global-oid"], 10, 64)
		if err != nil {
			return g.reject(svc, fmt.Errorf("oid must be int64, oid=%s", seen["x-md-global-oid"]))
		}
		uid, err := strconv.ParseInt(seen["x-md-global-uid"], 10, 64)
		if err != nil {
			return g.reject(svc, fmt.Errorf("uid must be int64, uid=%s", seen["x-md-global-uid"]))
		}
		defer func() {
			e := event{Event: "end", Service: svc, Oid: oid}
			if err != nil {
				e.Error = err.Error()
			}
			g.out.emit(e)
		}()

		s := &tunnelState{
			game: g, stream: stream, uid: uid, color: seen["x-md-global-color"],
			kicked: make(chan struct{}),
		}
		if g.kickConflicts {
			g.claim(svc, oid, s)
			defer g.release(svc, oid, s)
		}

		// Requests come through a goroutine so that a kick can end the stream while it waits;
		// every send stays on this goroutine (grpc-go allows one sender at a time).
		done := make(chan struct{})
		defer close(done)
		requests := make(chan *wire.Tunnel)
		recvErr := make(chan error, 1)
		go func() {
			for {
				in := &wire.Tunnel{}
				if err := stream.RecvMsg(in); err != nil {
					recvErr <- err
					return
				}
				select {
				case requests <- in:
				case <-done:
					return
				}
			}
		}()
		for {
			select {
			case in := <-requests:
				if svc == "room" {
					err = s.room(in)
				} else {
					err = s.player(in)
				}
				if err != nil {
					return err
				}
			case err := <-recvErr:
				if err == io.EOF {
					return nil
				}
				return fmt.Errorf("TunnelRequest recv failed: %w", err)
			case <-s.kicked:
				g.out.emit(event{Event: "kicked", Service: svc, Oid: oid})
				// Roma: the stopped worker pushes SCServerLogout, then its tunnel ends.
				logout := wire.SCServerLogout{Code: logoutConflictingLogin}
				return s.send(&wire.Tunnel{Data: logout.Marshal(), Obj: oid, Mod: modSystem, Seq: seqLogout})
			}
		}
	}
}

// claim makes s the live stream of (svc, oid), kicking the one it replaces.
func (g *game) claim(svc string, oid int64, s *tunnelState) {
	g.liveMu.Lock()
	defer g.liveMu.Unlock()
	if old := g.live[svc][oid]; old != nil {
		close(old.kicked)
	}
	g.live[svc][oid] = s
}

// release forgets s as the live stream of (svc, oid) unless a newer one took its place.
func (g *game) release(svc string, oid int64, s *tunnelState) {
	g.liveMu.Lock()
	defer g.liveMu.Unlock()
	if g.live[svc][oid] == s {
		delete(g.live[svc], oid)
	}
}

func (g *game) reject(svc string, err error) error {
	g.out.emit(event{Event: "rejected", Service: svc, Error: err.Error()})
	return err
}

// tunnelState is what one stream knows: its player and whether a heartbeat came yet.
type tunnelState struct {
	game          *game
	stream        grpc.ServerStream
	uid           int64
	color         string
	heartbeatDone bool
	// kicked is closed when a newer stream for the same object replaces this one.
	kicked chan struct{}
}

func (s *tunnelState) send(m *wire.Tunnel) error {
	if err := s.stream.SendMsg(m); err != nil {
		return fmt.Errorf("TunnelResponse send failed: %w", err)
	}
	return nil
}

func (s *tunnelState) player(in *wire.Tunnel) error {
	if in.Mod == modSystem && in.Seq == seqHeartbeat {
		return s.heartbeat(in)
	}
	if err := s.send(&wire.Tunnel{
		Data: in.Data, DataVersion: in.DataVersion, Obj: in.Obj, Mod: in.Mod, Seq: in.Seq, Index: in.Index,
	}); err != nil {
		return err
	}
	if in.Seq == seqEchoPush {
		return s.send(&wire.Tunnel{Data: []byte("pushed"), Obj: in.Obj, Mod: in.Mod, Seq: in.Seq})
	}
	return nil
}

// heartbeat answers as Roma's SystemUseCase.Heartbeat: after the first heartbeat, a client
// clock more than 30 s away from the game clock gets ErrTime.
func (s *tunnelState) heartbeat(in *wire.Tunnel) error {
	var cs wire.CSHeartbeat
	if err := cs.Unmarshal(in.Data); err != nil {
		return fmt.Errorf("CSHeartbeat: %w", err)
	}
	now := time.Now().Add(s.game.clockOffset).Unix()
	sc := wire.SCHeartbeat{ServerTime: now, Code: wire.HeartbeatSucceeded}
	if s.heartbeatDone && (cs.ClientTime+heartbeatWindow < now || cs.ClientTime-heartbeatWindow > now) {
		sc.Code = wire.HeartbeatErrTime
	}
	s.heartbeatDone = true
	s.game.out.emit(event{Event: "heartbeat", ClientTime: cs.ClientTime, ServerTime: now, Code: sc.Code})
	return s.send(&wire.Tunnel{Data: sc.Marshal(), Obj: in.Obj, Mod: in.Mod, Seq: in.Seq, Index: in.Index})
}

func (s *tunnelState) room(in *wire.Tunnel) error {
	g := s.game
	key := roomKey{color: s.color, room: in.Obj}
	reply := []byte("ok")
	switch in.Seq {
	case seqJoin:
		g.mu.Lock()
		if g.members[key] == nil {
			g.members[key] = map[int64]bool{}
		}
		g.members[key][s.uid] = true
		g.mu.Unlock()
	case seqLeave:
		g.mu.Lock()
		delete(g.members[key], s.uid)
		g.mu.Unlock()
	case seqSay:
		if err := g.multicast(s.uid, s.color, in); err != nil {
			reply = []byte("push failed: " + err.Error())
		}
	default:
		reply = []byte(fmt.Sprintf("unknown room request %d", in.Seq))
	}
	return s.send(&wire.Tunnel{
		Data: reply, Obj: in.Obj, Mod: in.Mod, Seq: in.Seq, Index: in.Index, ConnID: in.ConnID,
	})
}

// multicast pushes what uid said to the other members of the room.
func (g *game) multicast(uid int64, color string, in *wire.Tunnel) error {
	g.mu.Lock()
	var others []int64
	for m := range g.members[roomKey{color: color, room: in.Obj}] {
		if m != uid {
			others = append(others, m)
		}
	}
	g.mu.Unlock()
	sort.Slice(others, func(i, j int) bool { return others[i] < others[j] })

	data := append([]byte(fmt.Sprintf("%d: ", uid)), in.Data...)
	req := &wire.MulticastRequest{
		Bodies: []wire.PushBody{{Data: data, Obj: in.Obj, Mod: in.Mod, Seq: seqSaid}},
		UIDs:   others,
		Color:  color,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "x-md-global-color", color)
	var resp wire.MulticastResponse
	err := g.push.Invoke(ctx, "/broadcaster.service.push.v1.PushService/Multicast", req, &resp)
	e := event{Event: "multicast", UIDs: others, Pushed: resp.PushedUIDs}
	if err != nil {
		e.Error = err.Error()
	}
	g.out.emit(e)
	return err
}
