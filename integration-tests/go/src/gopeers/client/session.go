package main

import (
	"bytes"
	"compress/zlib"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"io/ioutil"
	"time"

	"golang.org/x/crypto/curve25519"

	"gopeers/wire"
)

// Module and sequence numbers (PROTOCOL.md "Envelope").
const (
	modSystem        = 1
	seqHandshake     = 1
	seqHeartbeat     = 2
	seqUnexpectedErr = 3
	seqLogout        = 4
	modEcho          = 2
	seqEcho          = 1
	seqEchoPush      = 100
	// maxInflated bounds what a compressed reply may inflate to.
	maxInflated = 1 << 20
)

// session is one go-pantheon session on one frame connection.
type session struct {
	o     *options
	r     *report
	n     int
	uid   int64
	c     frameConn
	aead  *sealer
	index int32
}

// run logs uid in on c and runs every check, reporting each as session n.
func run(o *options, r *report, n int, uid int64, c frameConn) error {
	s := &session{o: o, r: r, n: n, uid: uid, c: c}
	steps := []struct {
		name string
		f    func() error
	}{
		{"handshake", s.handshake},
		{"heartbeat", s.heartbeat},
		{"echo", s.echo},
		{"compressed", s.compressed},
		{"push", s.push},
	}
	for _, step := range steps {
		if step.name == "push" && !o.push {
			continue
		}
		if err := step.f(); err != nil {
			return fmt.Errorf("session %d (uid %d) %s: %w", n, uid, step.name, err)
		}
	}
	if o.awaitPushes > 0 {
		if err := s.awaitPushes(); err != nil {
			return fmt.Errorf("session %d (uid %d) awaiting pushes: %w", n, uid, err)
		}
	}
	return nil
}

// awaitPushes says the session is ready, then reports every server push (index 0) until
// -await-pushes of them arrived; a reply-shaped packet (index ≠ 0) is an error, nothing was
// asked.
func (s *session) awaitPushes() error {
	s.report("ready", map[string]interface{}{"uid": s.uid})
	by := time.Now().Add(s.o.awaitTimeout)
	for n := 1; n <= s.o.awaitPushes; n++ {
		_ = s.c.SetDeadline(by)
		push, err := s.read()
		if err != nil {
			return fmt.Errorf("%d of %d pushes arrived: %w", n-1, s.o.awaitPushes, err)
		}
		if push.Index != 0 {
			return fmt.Errorf("not a push: %s", describe(&push.Packet))
		}
		s.report("received", map[string]interface{}{
			"n": n, "uid": s.uid, "mod": push.Mod, "seq": push.Seq, "obj": push.Obj,
			"data": string(push.Data),
		})
	}
	return nil
}

// handshake runs go-pantheon's v1 handshake: X25519, the raw shared secret as the AES-GCM key
// of both directions, the server's Ed25519 signature over its X25519 key.
func (s *session) handshake() error {
	priv := make([]byte, curve25519.ScalarSize)
	if _, err := rand.Read(priv); err != nil {
		return err
	}
	pub, err := curve25519.X25519(priv, curve25519.Basepoint)
	if err != nil {
		return err
	}
	token, err := mintToken(s.o, s.uid)
	if err != nil {
		return err
	}
	cs := wire.CSHandshake{Pub: pub, Token: token, ServerID: s.o.sid, Timestamp: time.Now().Unix()}
	if s.o.clientKey != nil {
		cs.Sign = ed25519.Sign(s.o.clientKey, pub)
	}
	hello := wire.Packet{Mod: modSystem, Seq: seqHandshake, Data: cs.Marshal()}
	s.deadline()
	if err := s.c.WriteFrame(hello.Marshal()); err != nil {
		return err
	}
	frame, err := s.c.ReadFrame()
	if err != nil {
		return fmt.Errorf("no SCHandshake (the server refused the handshake?): %w", err)
	}
	var reply wire.Packet
	if err := reply.Unmarshal(frame); err != nil {
		return fmt.Errorf("SCHandshake packet: %w", err)
	}
	if reply.Mod != modSystem || reply.Seq != seqHandshake {
		return fmt.Errorf("answered with mod %d seq %d, not a handshake", reply.Mod, reply.Seq)
	}
	var sc wire.SCHandshake
	if err := sc.Unmarshal(reply.Data); err != nil {
		return fmt.Errorf("SCHandshake: %w", err)
	}
	if !ed25519.Verify(s.o.serverPub, sc.Pub, sc.Sign) {
		return fmt.Errorf("the server's signature over its key does not verify with -server-pub")
	}
	shared, err := curve25519.X25519(priv, sc.Pub)
	if err != nil {
		return fmt.Errorf("X25519 with the server's key: %w", err)
	}
	if s.aead, err = newSealer(shared); err != nil {
		return err
	}
	if sc.StartIndex == 0 {
		return fmt.Errorf("SCHandshake.start_index is 0")
	}
	s.index = sc.StartIndex
	s.report("handshake", map[string]interface{}{
		"uid": s.uid, "start_index": sc.StartIndex, "server_time": sc.Timestamp,
	})
	return nil
}

func (s *session) heartbeat() error {
	now := time.Now().Unix()
	cs := wire.CSHeartbeat{ClientTime: now}
	reply, err := s.request(&wire.Packet{Mod: modSystem, Seq: seqHeartbeat, Data: cs.Marshal()})
	if err != nil {
		return err
	}
	var sc wire.SCHeartbeat
	if err := sc.Unmarshal(reply.Data); err != nil {
		return fmt.Errorf("SCHeartbeat: %w", err)
	}
	if sc.Code != wire.HeartbeatSucceeded {
		return fmt.Errorf("SCHeartbeat code %d, not Succeeded", sc.Code)
	}
	s.report("heartbeat", map[string]interface{}{
		"code": sc.Code, "server_time": sc.ServerTime, "skew": sc.ServerTime - now, "obj": reply.Obj,
		"index": reply.Index,
	})
	return nil
}

func (s *session) echo() error {
	data := []byte(fmt.Sprintf("hello from go, uid %d", s.uid))
	reply, err := s.echoed(&wire.Packet{Mod: modEcho, Seq: seqEcho, Data: data})
	if err != nil {
		return err
	}
	s.report("echo", map[string]interface{}{"obj": reply.Obj, "index": reply.Index, "bytes": len(reply.Data)})
	return nil
}

// compressed sends an echo large enough for the server to compress its reply.
func (s *session) compressed() error {
	data := bytes.Repeat([]byte("go-pantheon compresses large replies with zlib. "), s.o.compressSize/48+1)
	data = data[:s.o.compressSize]
	reply, err := s.echoed(&wire.Packet{Mod: modEcho, Seq: seqEcho, Data: data})
	if err != nil {
		return err
	}
	if !reply.compressed {
		return fmt.Errorf("a %d-byte reply came uncompressed", len(data))
	}
	s.report("compressed", map[string]interface{}{
		"bytes": len(reply.Data), "wire_bytes": reply.wireBytes, "index": reply.Index,
	})
	return nil
}

// push sends seq 100, which the game services answer with an echo then a push on the tunnel.
func (s *session) push() error {
	if _, err := s.echoed(&wire.Packet{Mod: modEcho, Seq: seqEchoPush, Data: []byte("p")}); err != nil {
		return err
	}
	push, err := s.recv()
	if err != nil {
		return fmt.Errorf("no push after the reply: %w", err)
	}
	if push.Index != 0 || push.Mod != modEcho || push.Seq != seqEchoPush || string(push.Data) != "pushed" {
		return fmt.Errorf("not the tunnel push: %s", describe(&push.Packet))
	}
	s.report("push", map[string]interface{}{"obj": push.Obj, "data": string(push.Data)})
	return nil
}

// echoed sends p and checks the reply is its echo, with obj = uid (the gateway's rule for 0).
func (s *session) echoed(p *wire.Packet) (*received, error) {
	sent := append([]byte(nil), p.Data...)
	reply, err := s.request(p)
	if err != nil {
		return nil, err
	}
	if reply.Mod != p.Mod || reply.Seq != p.Seq || !bytes.Equal(reply.Data, sent) {
		return nil, fmt.Errorf("not an echo: %s", describe(&reply.Packet))
	}
	if reply.Obj != s.uid {
		return nil, fmt.Errorf("echo with obj %d, not the uid %d", reply.Obj, s.uid)
	}
	return reply, nil
}

// request sends p with the next index and waits for the reply carrying that index.
func (s *session) request(p *wire.Packet) (*received, error) {
	p.Index = s.index
	s.index++
	s.deadline()
	if err := s.c.WriteFrame(s.aead.seal(p.Marshal())); err != nil {
		return nil, err
	}
	reply, err := s.recv()
	if err != nil {
		return nil, fmt.Errorf("no reply to index %d: %w", p.Index, err)
	}
	if reply.Index != p.Index {
		return nil, fmt.Errorf("waiting for the reply to index %d, got %s", p.Index, describe(&reply.Packet))
	}
	return reply, nil
}

// received is a packet with its data inflated.
type received struct {
	wire.Packet
	compressed bool
	wireBytes  int
}

func (s *session) recv() (*received, error) {
	s.deadline()
	return s.read()
}

// read takes the next packet within the deadline already set.
func (s *session) read() (*received, error) {
	frame, err := s.c.ReadFrame()
	if err != nil {
		return nil, err
	}
	plain, err := s.aead.open(frame)
	if err != nil {
		return nil, fmt.Errorf("a frame that does not open: %w", err)
	}
	r := &received{}
	if err := r.Unmarshal(plain); err != nil {
		return nil, fmt.Errorf("packet: %w", err)
	}
	r.wireBytes = len(r.Data)
	if r.Compress {
		zr, err := zlib.NewReader(bytes.NewReader(r.Data))
		if err != nil {
			return nil, fmt.Errorf("compressed data: %w", err)
		}
		inflated, err := ioutil.ReadAll(io.LimitReader(zr, maxInflated+1))
		if err != nil {
			return nil, fmt.Errorf("compressed data: %w", err)
		}
		if len(inflated) > maxInflated {
			return nil, fmt.Errorf("compressed data inflates past %d bytes", maxInflated)
		}
		r.Data, r.Compress, r.compressed = inflated, false, true
	}
	if r.Mod == modSystem && (r.Seq == seqUnexpectedErr || r.Seq == seqLogout) {
		return nil, fmt.Errorf("the server sent %s", describe(&r.Packet))
	}
	return r, nil
}

func (s *session) deadline() { _ = s.c.SetDeadline(time.Now().Add(s.o.timeout)) }

func (s *session) report(check string, fields map[string]interface{}) {
	s.r.check(check, s.n, fields)
}

// describe spells out a packet for an error message, decoding the System error pushes.
func describe(p *wire.Packet) string {
	head := fmt.Sprintf("mod %d seq %d obj %d index %d", p.Mod, p.Seq, p.Obj, p.Index)
	if p.Mod == modSystem && p.Seq == seqUnexpectedErr {
		var e wire.SCServerUnexpectedErr
		if e.Unmarshal(p.Data) == nil {
			return fmt.Sprintf("SCServerUnexpectedErr{mod %d seq %d %q} (%s)", e.Mod, e.Seq, e.Msg, head)
		}
	}
	if p.Mod == modSystem && p.Seq == seqLogout {
		return fmt.Sprintf("SCServerLogout %x (%s)", p.Data, head)
	}
	if len(p.Data) > 64 {
		return fmt.Sprintf("%s, %d bytes of data", head, len(p.Data))
	}
	return fmt.Sprintf("%s data %q", head, p.Data)
}
