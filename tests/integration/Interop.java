// Interop helper for test_interop_java.sh: an independent AES implementation
// (the JDK's javax.crypto, SunJCE provider) that the shell script drives
// against the sealpost CLI in both directions, so that CBC/PKCS#7, GCM
// (128-bit tag, optional AAD) and CTR (128-bit big-endian counter) are checked
// against a second, unrelated implementation rather than only against ours.
//
// Usage:
//   java Interop enc|dec cbc|gcm|ctr KEYHEX IVHEX AADHEX|- IN OUT
//       encrypt or decrypt file IN into file OUT with javax.crypto;
//       GCM output/input is ciphertext||tag; AADHEX "-" means no AAD
//   java Interop ctrref KEYHEX IVHEX IN OUT
//       CTR built by hand from AES/ECB with the whole 16-byte IV as one
//       128-bit big-endian counter (wrapping mod 2^128), to cross-check the
//       JDK's CTR and the CLI at counter wrap-around
// Exit status: 0 success, 1 crypto failure (bad tag/padding), 2 usage error;
// on failure exactly one line on stderr.

import java.math.BigInteger;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.security.GeneralSecurityException;
import javax.crypto.Cipher;
import javax.crypto.spec.GCMParameterSpec;
import javax.crypto.spec.IvParameterSpec;
import javax.crypto.spec.SecretKeySpec;

public final class Interop {
    private Interop() {}

    static byte[] unhex(String s) {
        if (s.length() % 2 != 0) {
            throw new IllegalArgumentException("odd-length hex");
        }
        byte[] out = new byte[s.length() / 2];
        for (int i = 0; i < out.length; i++) {
            int hi = Character.digit(s.charAt(2 * i), 16);
            int lo = Character.digit(s.charAt(2 * i + 1), 16);
            if (hi < 0 || lo < 0) {
                throw new IllegalArgumentException("bad hex digit");
            }
            out[i] = (byte) ((hi << 4) | lo);
        }
        return out;
    }

    static byte[] run(String op, String mode, byte[] key, byte[] iv, byte[] aad, byte[] in)
            throws GeneralSecurityException {
        int dir = op.equals("enc") ? Cipher.ENCRYPT_MODE : Cipher.DECRYPT_MODE;
        SecretKeySpec k = new SecretKeySpec(key, "AES");
        Cipher c;
        switch (mode) {
            case "cbc":
                c = Cipher.getInstance("AES/CBC/PKCS5Padding");
                c.init(dir, k, new IvParameterSpec(iv));
                break;
            case "gcm":
                c = Cipher.getInstance("AES/GCM/NoPadding");
                c.init(dir, k, new GCMParameterSpec(128, iv));
                if (aad != null) {
                    c.updateAAD(aad);
                }
                break;
            case "ctr":
                c = Cipher.getInstance("AES/CTR/NoPadding");
                c.init(dir, k, new IvParameterSpec(iv));
                break;
            default:
                throw new IllegalArgumentException("unknown mode " + mode);
        }
        if (aad != null && !mode.equals("gcm")) {
            throw new IllegalArgumentException("AAD only applies to gcm");
        }
        return c.doFinal(in);
    }

    static byte[] ctrReference(byte[] key, byte[] iv, byte[] in) throws GeneralSecurityException {
        Cipher ecb = Cipher.getInstance("AES/ECB/NoPadding");
        ecb.init(Cipher.ENCRYPT_MODE, new SecretKeySpec(key, "AES"));
        BigInteger modulus = BigInteger.ONE.shiftLeft(128);
        BigInteger ctr = new BigInteger(1, iv);
        byte[] out = new byte[in.length];
        for (int off = 0; off < in.length; off += 16) {
            byte[] raw = ctr.toByteArray();
            byte[] block = new byte[16];
            int n = Math.min(raw.length, 16);
            System.arraycopy(raw, raw.length - n, block, 16 - n, n);
            byte[] ks = ecb.doFinal(block);
            for (int i = 0; i < 16 && off + i < in.length; i++) {
                out[off + i] = (byte) (in[off + i] ^ ks[i]);
            }
            ctr = ctr.add(BigInteger.ONE).mod(modulus);
        }
        return out;
    }

    public static void main(String[] args) {
        try {
            if (args.length == 7 && (args[0].equals("enc") || args[0].equals("dec"))) {
                byte[] key = unhex(args[2]);
                byte[] iv = unhex(args[3]);
                byte[] aad = args[4].equals("-") ? null : unhex(args[4]);
                byte[] in = Files.readAllBytes(Paths.get(args[5]));
                byte[] out = run(args[0], args[1], key, iv, aad, in);
                Files.write(Paths.get(args[6]), out);
            } else if (args.length == 5 && args[0].equals("ctrref")) {
                byte[] in = Files.readAllBytes(Paths.get(args[3]));
                Path outPath = Paths.get(args[4]);
                Files.write(outPath, ctrReference(unhex(args[1]), unhex(args[2]), in));
            } else {
                System.err.println("usage: Interop enc|dec cbc|gcm|ctr KEYHEX IVHEX AADHEX|- IN OUT"
                        + " | ctrref KEYHEX IVHEX IN OUT");
                System.exit(2);
            }
        } catch (GeneralSecurityException e) {
            System.err.println("crypto failure: " + e.getClass().getSimpleName());
            System.exit(1);
        } catch (Exception e) {
            System.err.println("error: " + e);
            System.exit(2);
        }
    }
}
