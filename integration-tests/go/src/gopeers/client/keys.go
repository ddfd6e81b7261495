package main

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"time"

	"gopeers/wire"
)

// parseServerKey reads the server's Ed25519 key from a PEM PUBLIC KEY (PKIX) or, as
// go-pantheon clients take it, from the key of a PEM CERTIFICATE.
func parseServerKey(data []byte) (ed25519.PublicKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("no PEM block")
	}
	var key interface{}
	switch block.Type {
	case "PUBLIC KEY":
		k, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, err
		}
		key = k
	case "CERTIFICATE":
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		key = cert.PublicKey
	default:
		return nil, fmt.Errorf("PEM block %q is neither PUBLIC KEY nor CERTIFICATE", block.Type)
	}
	pub, ok := key.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("a %T key, not Ed25519", key)
	}
	return pub, nil
}

// parseClientKey reads a PKCS#8 Ed25519 private key.
func parseClientKey(data []byte) (ed25519.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("no PEM PRIVATE KEY block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("a %T key, not Ed25519", k)
	}
	return priv, nil
}

// sealer is AES-GCM the way go-pantheon uses it for tokens and legacy frames:
// random 12-byte nonce || ciphertext || 16-byte tag, no associated data.
type sealer struct{ aead cipher.AEAD }

// newSealer takes the key's raw bytes: 16, 24 or 32 give AES-128, -192 or -256.
func newSealer(key []byte) (*sealer, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &sealer{aead: aead}, nil
}

func (s *sealer) seal(plain []byte) []byte {
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(plain)+s.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		panic(err)
	}
	return s.aead.Seal(nonce, nonce, plain, nil)
}

func (s *sealer) open(sealed []byte) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n+s.aead.Overhead() {
		return nil, fmt.Errorf("sealed payload of %d bytes is too short", len(sealed))
	}
	return s.aead.Open(nil, sealed[:n], sealed[n:], nil)
}

// mintToken seals an AuthToken as Lares does: status GATE by default, a random string, the
// expiry in unix seconds, base64 URL alphabet with padding.
func mintToken(o *options, uid int64) (string, error) {
	s, err := newSealer(o.tokenKey)
	if err != nil {
		return "", err
	}
	token := wire.AuthToken{
		Rand:      randomAlphaNum(16),
		Color:     o.color,
		AccountID: uid,
		ServerID:  o.tokenSid,
		Timeout:   time.Now().Add(o.tokenTTL).Unix(),
		Status:    int32(o.status),
	}
	return base64.URLEncoding.EncodeToString(s.seal(token.Marshal())), nil
}

func randomAlphaNum(n int) string {
	const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	return string(b)
}
