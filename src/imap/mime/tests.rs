//! Tests of the MIME structure: parsing, ENVELOPE/BODYSTRUCTURE output, sections, cache.
//! Expected strings were checked against Dovecot 2.3 for the same messages where noted.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

/// The test messages are written with LF; stored mail usually has CRLF.
fn crlf(s: &str) -> Vec<u8> {
    s.replace("\r\n", "\n").replace('\n', "\r\n").into_bytes()
}

fn envelope_of(raw: &[u8]) -> String {
    let mut out = Vec::new();
    MessageStructure::parse(raw).write_envelope(&mut out);
    String::from_utf8(out).unwrap()
}

fn body_of(raw: &[u8], extensible: bool) -> String {
    let mut out = Vec::new();
    MessageStructure::parse(raw).write_body(&mut out, extensible);
    String::from_utf8(out).unwrap()
}

fn fetch(raw: &[u8], part: &[u32], kind: Option<SectionPart>) -> String {
    let s = MessageStructure::parse(raw);
    let section = Section {
        part: part.to_vec(),
        kind,
    };
    String::from_utf8(section_bytes(raw, &s, &section).into_owned()).unwrap()
}

/// RFC 3501 section 8, `a003 fetch 12 full` and `a004 fetch 12 body[header]`.
#[test]
fn rfc3501_section_8_example() {
    let header = "Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\n\
        From: Terry Gray <gray@cac.washington.edu>\n\
        Subject: IMAP4rev1 WG mtg summary and minutes\n\
        To: imap@cac.washington.edu\n\
        cc: minutes@CNRI.Reston.VA.US, John Klensin <KLENSIN@MIT.EDU>\n\
        Message-Id: <B27397-0100000@cac.washington.edu>\n\
        MIME-Version: 1.0\n\
        Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\n\n";
    // 92 lines, 3028 octets, as in the example.
    let mut body = String::new();
    for _ in 0..91 {
        body.push_str(&"x".repeat(29));
        body.push('\n');
    }
    body.push_str(&"y".repeat(3028 - 91 * 31 - 2));
    body.push('\n');
    let raw = crlf(&format!("{header}{body}"));
    assert_eq!(raw.len() - 342, 3028);

    assert_eq!(
        envelope_of(&raw),
        "(\"Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\" \
         \"IMAP4rev1 WG mtg summary and minutes\" \
         ((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) \
         ((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) \
         ((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) \
         ((NIL NIL \"imap\" \"cac.washington.edu\")) \
         ((NIL NIL \"minutes\" \"CNRI.Reston.VA.US\") \
         (\"John Klensin\" NIL \"KLENSIN\" \"MIT.EDU\")) NIL NIL \
         \"<B27397-0100000@cac.washington.edu>\")"
            .replace(") (\"John", ")(\"John")
    );
    // The example's server wrote the absent encoding as "7BIT"; spate
    // writes "7bit" as Dovecot does (the case is not significant).
    assert_eq!(
        body_of(&raw, false),
        "(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7bit\" 3028 92)"
    );
    let head = fetch(&raw, &[], Some(SectionPart::Header));
    assert_eq!(head.len(), 342);
    assert!(head.ends_with("CHARSET=US-ASCII\r\n\r\n"));
}

#[test]
fn simple_text_without_content_type() {
    let raw = crlf("Subject: hi\nFrom: a@b.example\n\nline 1\nline 2\n");
    assert_eq!(
        body_of(&raw, true),
        "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 16 2 NIL NIL NIL NIL)"
    );
    assert_eq!(
        body_of(&raw, false),
        "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 16 2)"
    );
    assert_eq!(
        envelope_of(&raw),
        "(NIL \"hi\" ((NIL NIL \"a\" \"b.example\")) ((NIL NIL \"a\" \"b.example\")) \
         ((NIL NIL \"a\" \"b.example\")) NIL NIL NIL NIL NIL)"
    );
    assert_eq!(fetch(&raw, &[1], None), "line 1\r\nline 2\r\n");
    assert_eq!(
        fetch(&raw, &[], Some(SectionPart::Text)),
        "line 1\r\nline 2\r\n"
    );
    // Part 1 of a single-part message is its body; its MIME header is the
    // message header (Dovecot agrees).
    assert_eq!(
        fetch(&raw, &[1], Some(SectionPart::Mime)),
        "Subject: hi\r\nFrom: a@b.example\r\n\r\n"
    );
    assert_eq!(fetch(&raw, &[2], None), "");
    assert_eq!(fetch(&raw, &[1, 1], None), "");
    assert_eq!(fetch(&raw, &[0], None), "");
    assert_eq!(fetch(&raw, &[], Some(SectionPart::Mime)), "");
    assert_eq!(fetch(&raw, &[], None).as_bytes(), &raw[..]);
}

#[test]
fn missing_headers_are_nil() {
    let raw = b"\r\nno header here\r\n";
    assert_eq!(
        envelope_of(raw),
        "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
    );
    assert_eq!(
        body_of(raw, true),
        "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 16 1 NIL NIL NIL NIL)"
    );
    assert_eq!(fetch(raw, &[], Some(SectionPart::Header)), "\r\n");
    // Empty input is a message too.
    assert_eq!(
        envelope_of(b""),
        "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
    );
    assert_eq!(
        body_of(b"", false),
        "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0)"
    );
}

#[test]
fn header_only_message() {
    let raw = b"Subject: header only\r\nFrom: a@b";
    let s = MessageStructure::parse(raw);
    assert_eq!(s.root().header.len(), raw.len());
    assert_eq!(s.root().size(), 0);
    assert_eq!(fetch(raw, &[], Some(SectionPart::Header)).as_bytes(), raw);
    assert_eq!(fetch(raw, &[], Some(SectionPart::Text)), "");
    assert_eq!(
        fetch(
            raw,
            &[],
            Some(SectionPart::HeaderFields(vec!["from".into()]))
        ),
        "From: a@b\r\n\r\n"
    );
}

#[test]
fn lf_only_sizes_are_the_stored_bytes() {
    let raw = b"Subject: lf only\nContent-Type: Text/Plain; Charset=UTF-8\n\na\nb";
    // Dovecot reports 4 (CRLF size); spate reports what it stores.
    assert_eq!(
        body_of(raw, true),
        "(\"Text\" \"Plain\" (\"Charset\" \"UTF-8\") NIL NIL \"7bit\" 3 1 NIL NIL NIL NIL)"
    );
    assert_eq!(fetch(raw, &[1], None), "a\nb");
    assert_eq!(
        fetch(
            raw,
            &[],
            Some(SectionPart::HeaderFields(vec!["SUBJECT".into()]))
        ),
        "Subject: lf only\n\n"
    );
}

const ALTERNATIVE: &str = "From: \"A \\\"q\\\" B\" <a@b.example>
Subject: =?utf-8?q?h=C3=A9?= test
\tfolded
To: undisclosed-recipients:;
Cc: grp: x@y.z, \"N\" <u@v.w>;, plain@host (Comment Name)
Content-Type: multipart/alternative; boundary=\"XX\"

preamble
--XX

hello
world
--XX
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: quoted-printable

<p>hello</p>
--XX--
epilogue
";

#[test]
fn multipart_alternative() {
    let raw = crlf(ALTERNATIVE);
    // Same as Dovecot.
    assert_eq!(
        body_of(&raw, true),
        "((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 12 1 NIL NIL NIL NIL)\
         (\"text\" \"html\" (\"charset\" \"utf-8\") NIL NIL \"quoted-printable\" 12 0 NIL NIL NIL NIL) \
         \"alternative\" (\"boundary\" \"XX\") NIL NIL NIL)"
    );
    assert_eq!(
        body_of(&raw, false),
        "((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 12 1)\
         (\"text\" \"html\" (\"charset\" \"utf-8\") NIL NIL \"quoted-printable\" 12 0) \"alternative\")"
    );
    assert_eq!(fetch(&raw, &[1], None), "hello\r\nworld");
    assert_eq!(fetch(&raw, &[1], Some(SectionPart::Mime)), "\r\n");
    assert_eq!(fetch(&raw, &[2], None), "<p>hello</p>");
    assert_eq!(
        fetch(&raw, &[2], Some(SectionPart::Mime)),
        "Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    );
    // HEADER and TEXT only apply to messages.
    assert_eq!(fetch(&raw, &[2], Some(SectionPart::Header)), "");
    assert_eq!(fetch(&raw, &[2], Some(SectionPart::Text)), "");
    assert_eq!(fetch(&raw, &[3], None), "");
    let text = fetch(&raw, &[], Some(SectionPart::Text));
    assert!(text.starts_with("preamble\r\n--XX\r\n"));
    assert!(text.ends_with("--XX--\r\nepilogue\r\n"));
}

#[test]
fn envelope_groups_quotes_and_encoded_words() {
    let raw = crlf(ALTERNATIVE);
    // Same as Dovecot, which writes the quoted name as a literal instead.
    assert_eq!(
        envelope_of(&raw),
        "(NIL \"=?utf-8?q?h=C3=A9?= test folded\" \
         ((\"A \\\"q\\\" B\" NIL \"a\" \"b.example\")) \
         ((\"A \\\"q\\\" B\" NIL \"a\" \"b.example\")) \
         ((\"A \\\"q\\\" B\" NIL \"a\" \"b.example\")) \
         ((NIL NIL \"undisclosed-recipients\" NIL)(NIL NIL NIL NIL)) \
         ((NIL NIL \"grp\" NIL)(NIL NIL \"x\" \"y.z\")(\"N\" NIL \"u\" \"v.w\")(NIL NIL NIL NIL)\
         (\"Comment Name\" NIL \"plain\" \"host\")) NIL NIL NIL)"
    );
}

#[test]
fn envelope_sloppy_addresses() {
    let raw = crlf(
        "From: <>\nSender: s@x\nReply-To:\nTo: John Doe, <@a.example,@b.example:u@h.example>, foo\n\
         Cc: x@, \"back\\\\slash\" <b@s>, John Q. Public <jqp@x>, first.last@dom.example\n\
         Bcc: =?utf-8?b?w6k=?= <e@x.de>, [not] (c) <\"quoted local\"@[1.2.3.4]>\n\
         Subject:\nDate:   Mon, 7 Feb 1994 21:52:25 -0800 (PST)  \n\
         Message-ID:  <1@x>\nIn-Reply-To: <a@b> <c@d>\n\n",
    );
    let s = MessageStructure::parse(&raw);
    let e = s.envelope();
    assert_eq!(e.subject.as_deref(), Some(&b""[..]));
    assert_eq!(
        e.date.as_deref(),
        Some(&b"Mon, 7 Feb 1994 21:52:25 -0800 (PST)"[..])
    );
    assert_eq!(e.in_reply_to.as_deref(), Some(&b"<a@b> <c@d>"[..]));
    assert_eq!(
        envelope_of(&raw),
        "(\"Mon, 7 Feb 1994 21:52:25 -0800 (PST)\" \"\" \
         ((NIL NIL \"MISSING_MAILBOX\" \"MISSING_DOMAIN\")) \
         ((NIL NIL \"s\" \"x\")) \
         ((NIL NIL \"MISSING_MAILBOX\" \"MISSING_DOMAIN\")) \
         ((\"John Doe\" NIL \"MISSING_MAILBOX\" \"MISSING_DOMAIN\")\
         (NIL \"@a.example,@b.example\" \"u\" \"h.example\")(NIL NIL \"foo\" \"MISSING_DOMAIN\")) \
         ((NIL NIL \"x\" \"MISSING_DOMAIN\")(\"back\\\\slash\" NIL \"b\" \"s\")\
         (\"John Q. Public\" NIL \"jqp\" \"x\")(NIL NIL \"first.last\" \"dom.example\")) \
         ((\"=?utf-8?b?w6k=?=\" NIL \"e\" \"x.de\")(\"[not]\" NIL \"quoted local\" \"[1.2.3.4]\")) \
         \"<a@b> <c@d>\" \"<1@x>\")"
    );
}

#[test]
fn eight_bit_header_is_a_literal() {
    let raw = b"Subject: 8bit \xc3\xa9t\xc3\xa9\r\nFrom: J\xc3\xb6rg <j@x.de>\r\n\r\nbody\r\n";
    let mut out = Vec::new();
    MessageStructure::parse(raw).write_envelope(&mut out);
    let expected: &[u8] = b"(NIL {10}\r\n8bit \xc3\xa9t\xc3\xa9 (({5}\r\nJ\xc3\xb6rg NIL \"j\" \"x.de\")) \
        (({5}\r\nJ\xc3\xb6rg NIL \"j\" \"x.de\")) (({5}\r\nJ\xc3\xb6rg NIL \"j\" \"x.de\")) NIL NIL NIL NIL NIL)";
    assert_eq!(out, expected);
}

#[test]
fn string_quoting() {
    let mut out = Vec::new();
    write::string(&mut out, b"a \"b\" \\c");
    assert_eq!(out, b"\"a \\\"b\\\" \\\\c\"");
    out.clear();
    write::string(&mut out, b"two\r\nlines");
    assert_eq!(out, b"{10}\r\ntwo\r\nlines");
    out.clear();
    write::string(&mut out, b"nul\0\xff");
    assert_eq!(out, b"{4}\r\nnul\xff");
    out.clear();
    write::string(&mut out, b"");
    assert_eq!(out, b"\"\"");
    out.clear();
    write::nstring(&mut out, None);
    assert_eq!(out, b"NIL");
}

const MIXED: &str = "From: a@b.example
Subject: mixed
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=\"outer\"

--outer
Content-Type: text/plain; charset=utf-8; format=flowed
Content-Transfer-Encoding: 8bit
Content-Description: the \"text\"

see attached
--outer
Content-Type: application/pdf;
 name*0*=utf-8''%E2%82%AC%20;
 name*1*=rate.pdf
Content-Disposition: attachment; filename*=utf-8''%E2%82%AC%20rate.pdf; size=4
Content-Transfer-Encoding: base64
Content-ID: <pdf@x>
Content-Language: en, de
Content-Location: http://example.test/rate.pdf
Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==

JVBE
Rg==
--outer
Content-Type: message/rfc822

From: Inner <inner@x.example>
Subject: inner message
Content-Type: multipart/mixed; boundary=\"in\"

--in
Content-Type: text/plain

inner text
--in
Content-Type: multipart/alternative; boundary=\"alt\"

--alt

alt plain
--alt
Content-Type: text/html

<b>alt</b>
--alt--
--in--
--outer--
";

#[test]
fn multipart_mixed_with_attachment_and_message() {
    let raw = crlf(MIXED);
    let s = MessageStructure::parse(&raw);
    let pdf = match &s.root().kind {
        PartKind::Multipart(children) => &children[1],
        other => panic!("not multipart: {other:?}"),
    };
    assert_eq!(pdf.param("name*").unwrap().decoded(), "\u{20ac} rate.pdf");
    let d = pdf.disposition.as_ref().unwrap();
    assert_eq!(d.params[1].decoded(), "\u{20ac} rate.pdf");

    let inner_env = "(NIL \"inner message\" ((\"Inner\" NIL \"inner\" \"x.example\")) \
        ((\"Inner\" NIL \"inner\" \"x.example\")) ((\"Inner\" NIL \"inner\" \"x.example\")) \
        NIL NIL NIL NIL NIL)";
    assert_eq!(
        body_of(&raw, true),
        format!(
            "((\"text\" \"plain\" (\"charset\" \"utf-8\" \"format\" \"flowed\") NIL \"the \\\"text\\\"\" \"8bit\" 12 0 NIL NIL NIL NIL)\
             (\"application\" \"pdf\" (\"name*\" \"utf-8''%E2%82%AC%20rate.pdf\") \"<pdf@x>\" NIL \"base64\" 10 \
             \"Q2hlY2sgSW50ZWdyaXR5IQ==\" (\"attachment\" (\"size\" \"4\" \"filename*\" \"utf-8''%E2%82%AC%20rate.pdf\")) \
             (\"en\" \"de\") \"http://example.test/rate.pdf\")\
             (\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 291 {inner_env} \
             ((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 10 0 NIL NIL NIL NIL)\
             ((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 9 0 NIL NIL NIL NIL)\
             (\"text\" \"html\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 10 0 NIL NIL NIL NIL) \
             \"alternative\" (\"boundary\" \"alt\") NIL NIL NIL) \
             \"mixed\" (\"boundary\" \"in\") NIL NIL NIL) 19 NIL NIL NIL NIL) \
             \"mixed\" (\"boundary\" \"outer\") NIL NIL NIL)"
        )
    );

    assert_eq!(fetch(&raw, &[1], None), "see attached");
    assert_eq!(fetch(&raw, &[2], None), "JVBE\r\nRg==");
    assert!(fetch(&raw, &[2], Some(SectionPart::Mime))
        .starts_with("Content-Type: application/pdf;\r\n name*0*"));
    // Part 3 is the whole attached message; 3.HEADER/3.TEXT its halves.
    let whole = fetch(&raw, &[3], None);
    assert!(whole.starts_with("From: Inner"));
    assert!(whole.ends_with("--in--"));
    assert_eq!(whole.len(), 291);
    let head = fetch(&raw, &[3], Some(SectionPart::Header));
    let text = fetch(&raw, &[3], Some(SectionPart::Text));
    assert_eq!(format!("{head}{text}"), whole);
    assert!(head.ends_with("boundary=\"in\"\r\n\r\n"));
    assert_eq!(
        fetch(&raw, &[3], Some(SectionPart::Mime)),
        "Content-Type: message/rfc822\r\n\r\n"
    );
    assert_eq!(
        fetch(
            &raw,
            &[3],
            Some(SectionPart::HeaderFields(vec![
                "SUBJECT".into(),
                "from".into()
            ]))
        ),
        "From: Inner <inner@x.example>\r\nSubject: inner message\r\n\r\n"
    );
    assert_eq!(
        fetch(
            &raw,
            &[3],
            Some(SectionPart::HeaderFieldsNot(vec![
                "from".into(),
                "subject".into()
            ]))
        ),
        "Content-Type: multipart/mixed; boundary=\"in\"\r\n\r\n"
    );
    assert_eq!(fetch(&raw, &[3, 1], None), "inner text");
    assert_eq!(
        fetch(&raw, &[3, 1], Some(SectionPart::Mime)),
        "Content-Type: text/plain\r\n\r\n"
    );
    assert_eq!(fetch(&raw, &[3, 2, 1], None), "alt plain");
    assert_eq!(fetch(&raw, &[3, 2, 2], None), "<b>alt</b>");
    assert_eq!(
        fetch(&raw, &[3, 2, 2], Some(SectionPart::Mime)),
        "Content-Type: text/html\r\n\r\n"
    );
    assert_eq!(fetch(&raw, &[3, 3], None), "");
    assert_eq!(fetch(&raw, &[3, 2, 1, 1], None), "");
    assert_eq!(
        fetch(
            &raw,
            &[],
            Some(SectionPart::HeaderFields(vec![
                "Subject".into(),
                "X-None".into()
            ]))
        ),
        "Subject: mixed\r\n\r\n"
    );
    assert_eq!(
        fetch(
            &raw,
            &[],
            Some(SectionPart::HeaderFields(vec!["X-None".into()]))
        ),
        "\r\n"
    );
}

#[test]
fn folded_and_repeated_fields_in_header_fields() {
    let raw = crlf("Received: one\n\tcontinued\nSubject: s\nreceived: two\n\nbody\n");
    assert_eq!(
        fetch(
            &raw,
            &[],
            Some(SectionPart::HeaderFields(vec!["RECEIVED".into()]))
        ),
        "Received: one\r\n\tcontinued\r\nreceived: two\r\n\r\n"
    );
    assert_eq!(
        fetch(
            &raw,
            &[],
            Some(SectionPart::HeaderFieldsNot(vec!["received".into()]))
        ),
        "Subject: s\r\n\r\n"
    );
}

#[test]
fn partial_ranges() {
    let raw = crlf(MIXED);
    let s = MessageStructure::parse(&raw);
    let section = Section {
        part: vec![3, 1],
        kind: None,
    };
    let bytes = section_bytes(&raw, &s, &section);
    assert_eq!(partial(&bytes, 0, 5), b"inner");
    assert_eq!(partial(&bytes, 6, 100), b"text");
    assert_eq!(partial(&bytes, 10, 1), b"");
    assert_eq!(partial(&bytes, 99, 1), b"");
    assert_eq!(partial(&bytes, u64::MAX, u64::MAX), b"");
    assert_eq!(partial(&bytes, 2, u64::MAX), b"ner text");
}

#[test]
fn rfc2231_continuations_follow_plain_params() {
    // Same as Dovecot: the joined parameter goes after the plain ones.
    let raw = crlf("Content-Type: text/plain; a*1=b; charset=x; a*0=c; name*0*=us-ascii'en'x%20; name*1=\"y z\"\n\nq\n");
    assert_eq!(
        body_of(&raw, false),
        "(\"text\" \"plain\" (\"charset\" \"x\" \"a\" \"cb\" \"name*\" \"us-ascii'en'x%20y%20z\") NIL NIL \"7bit\" 3 1)"
    );
    // A gap keeps the sections as they came.
    let raw = crlf("Content-Type: text/plain; charset=x; a*0=c; a*2=b\n\nq\n");
    assert_eq!(
        body_of(&raw, false),
        "(\"text\" \"plain\" (\"charset\" \"x\" \"a*0\" \"c\" \"a*2\" \"b\") NIL NIL \"7bit\" 3 1)"
    );
}

#[test]
fn a_comment_ending_in_a_backslash_is_harmless() {
    // Found by AFL: the quoted pair of a trailing `\` inside a comment
    // moved the cursor past the end of the header value, and the next
    // token sliced out of bounds.
    for value in [&b"(mu\\"[..], b"text/(x\\", b"text/plain; a=(\\"] {
        let mut raw = b"Content-Type: ".to_vec();
        raw.extend_from_slice(value);
        raw.extend_from_slice(b"\r\n\r\nbody\r\n");
        let body = body_of(&raw, true);
        assert!(body.starts_with('('), "{body}");
    }
}

#[test]
fn multipart_without_boundary_or_parts() {
    // Same as Dovecot: one empty text/plain part stands in.
    let raw = crlf("Subject: t\nContent-Type: multipart/mixed\n\nno boundary here\n");
    assert_eq!(
        body_of(&raw, true),
        "((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0 NIL NIL NIL NIL) \"mixed\" NIL NIL NIL NIL)"
    );
    let raw = crlf("Subject: t\nContent-Type: multipart/alternative; boundary=zz\n\nnothing\n");
    assert_eq!(
        body_of(&raw, false),
        "((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0) \"alternative\")"
    );
    assert_eq!(fetch(&raw, &[1], None), "");
    assert_eq!(fetch(&raw, &[], Some(SectionPart::Text)), "nothing\r\n");
}

#[test]
fn missing_close_delimiter_and_boundary_prefixes() {
    // The inner multipart never closes; the outer delimiter ends it. The
    // outer boundary is a prefix of the inner one. Same as Dovecot.
    let raw = crlf(
        "Subject: boundaries\nContent-Type: multipart/mixed; boundary=\"abc\"\n\n--abc\n\
         Content-Type: multipart/alternative; boundary=\"abcdef\"\n\n--abcdef\n\ninner 1\n--abcdef   \n\
         Content-Type: text/html\n\ninner 2\n--abc--\n",
    );
    assert_eq!(
        body_of(&raw, false),
        "(((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 7 0)\
         (\"text\" \"html\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 7 0) \"alternative\") \"mixed\")"
    );
    assert_eq!(fetch(&raw, &[1, 2], None), "inner 2");
    // No close delimiter at all: the last part runs to the end.
    let raw = crlf("Content-Type: multipart/mixed; boundary=b\n\n--b\n\none\n--b\n\ntwo\n");
    assert_eq!(fetch(&raw, &[1], None), "one");
    assert_eq!(fetch(&raw, &[2], None), "two\r\n");
}

#[test]
fn digest_parts_default_to_message() {
    let raw = crlf(
        "Content-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: d1\n\none\n--d\n\
         Content-Type: text/plain\n\nnot a message\n--d--\n",
    );
    // Same as Dovecot.
    assert_eq!(
        body_of(&raw, false),
        "((\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 18 (NIL \"d1\" NIL NIL NIL NIL NIL NIL NIL NIL) \
         (\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 3 0) 2)\
         (\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 13 0) \"digest\")"
    );
    assert_eq!(fetch(&raw, &[1, 1], None), "one");
    assert_eq!(
        fetch(&raw, &[1], Some(SectionPart::Header)),
        "Subject: d1\r\n\r\n"
    );
}

#[test]
fn encoded_message_rfc822_is_not_parsed() {
    let raw = crlf(
        "Content-Type: multipart/mixed; boundary=a\n\n--a\nContent-Type: message/rfc822\n\
         Content-Transfer-Encoding: base64\n\nU3ViamVjdDogeA0KDQp5DQo=\n--a--\n",
    );
    assert_eq!(
        body_of(&raw, false),
        "((\"message\" \"rfc822\" NIL NIL NIL \"base64\" 24 (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) \
         (\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0) 0) \"mixed\")"
    );
    assert_eq!(fetch(&raw, &[1, 1], None), "");
    assert_eq!(fetch(&raw, &[1], Some(SectionPart::Header)), "");
}

fn nested(depth: usize) -> Vec<u8> {
    let mut raw = String::new();
    for i in 0..depth {
        raw.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"b{i}\"\n\n--b{i}\n"
        ));
    }
    raw.push_str("\nleaf\n");
    for i in (0..depth).rev() {
        raw.push_str(&format!("--b{i}--\n"));
    }
    crlf(&raw)
}

#[test]
fn deep_nesting_is_bounded() {
    let depth_of = |p: &Part| {
        let mut d = 0;
        let mut p = p;
        while let PartKind::Multipart(c) = &p.kind {
            d += 1;
            p = &c[0];
        }
        (d, p.media_type.clone())
    };
    let s = MessageStructure::parse(&nested(10));
    assert_eq!(depth_of(s.root()), (10, b"text".to_vec()));
    let s = MessageStructure::parse(&nested(500));
    assert_eq!(depth_of(s.root()), (MAX_DEPTH, b"application".to_vec()));
    let mut out = Vec::new();
    s.write_body(&mut out, true);
    assert!(out.ends_with(b"\"mixed\" (\"boundary\" \"b0\") NIL NIL NIL)"));
    let back = MessageStructure::from_cache_bytes(&s.to_cache_bytes()).unwrap();
    assert_eq!(back, s);

    // Nested message/rfc822 the same way.
    let mut raw = String::new();
    for _ in 0..200 {
        raw.push_str("Content-Type: message/rfc822\n\n");
    }
    raw.push_str("Subject: bottom\n\nx\n");
    let s = MessageStructure::parse(raw.as_bytes());
    let mut out = Vec::new();
    s.write_body(&mut out, false);
    assert!(String::from_utf8(out)
        .unwrap()
        .contains("\"application\" \"octet-stream\""));
}

#[test]
fn part_count_is_bounded() {
    let mut raw = String::from("Content-Type: multipart/mixed; boundary=b\n\n");
    for i in 0..(MAX_PARTS + 50) {
        raw.push_str(&format!("--b\n\n{i}\n"));
    }
    raw.push_str("--b--\n");
    let s = MessageStructure::parse(raw.as_bytes());
    let PartKind::Multipart(children) = &s.root().kind else {
        panic!("not multipart");
    };
    assert_eq!(children.len(), MAX_PARTS - 1);
    let last = children.last().unwrap();
    assert!(last.body.get(raw.as_bytes()).unwrap().ends_with(b"--b--\n"));
}

#[test]
fn cache_roundtrip() {
    for raw in [
        crlf(MIXED),
        crlf(ALTERNATIVE),
        b"".to_vec(),
        b"Subject: x".to_vec(),
        b"Subject: 8bit \xff\r\n\r\n".to_vec(),
    ] {
        let s = MessageStructure::parse(&raw);
        let bytes = s.to_cache_bytes();
        assert_eq!(bytes[0], cache::CACHE_VERSION);
        let back = MessageStructure::from_cache_bytes(&bytes).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.raw_len, raw.len());
        // Every truncation is an error, never a panic.
        for n in 0..bytes.len() {
            assert!(MessageStructure::from_cache_bytes(&bytes[..n]).is_err());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            MessageStructure::from_cache_bytes(&longer),
            Err(CacheError::Invalid("trailing bytes"))
        );
    }
    assert_eq!(
        MessageStructure::from_cache_bytes(&[9, 0]),
        Err(CacheError::Version(9))
    );
    // A forged huge count is refused before allocating.
    assert_eq!(
        MessageStructure::from_cache_bytes(&[1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f]),
        Err(CacheError::Truncated)
    );
}

#[test]
fn stale_cache_does_not_panic() {
    let raw = crlf(MIXED);
    let s = MessageStructure::parse(&raw);
    let short = &raw[..40];
    for part in [vec![], vec![1], vec![3, 2, 1]] {
        for kind in [
            None,
            Some(SectionPart::Mime),
            Some(SectionPart::Text),
            Some(SectionPart::Header),
        ] {
            let _ = section_bytes(
                short,
                &s,
                &Section {
                    part: part.clone(),
                    kind,
                },
            );
        }
    }
}

/// Random mutations of real-looking mail and plain random bytes: parsing,
/// writing, every section and the cache must never panic.
#[test]
fn random_input_never_panics() {
    let mut rng = StdRng::seed_from_u64(0x5eed_1234);
    let seeds = [
        crlf(MIXED),
        crlf(ALTERNATIVE),
        nested(5),
        MIXED.as_bytes().to_vec(),
    ];
    let alphabet: &[u8] = b"-\r\n\r\n:;=\"\\()<>@,*'% \tabcXY\x80\xff\0boundary=--outer--in";
    for round in 0..3000 {
        let mut raw = if round % 4 == 3 {
            (0..rng.gen_range(0..600))
                .map(|_| rng.gen())
                .collect::<Vec<u8>>()
        } else {
            seeds[round % seeds.len()].clone()
        };
        for _ in 0..rng.gen_range(0..40) {
            if raw.is_empty() {
                raw.push(b'x');
            }
            let at = rng.gen_range(0..raw.len());
            match rng.gen_range(0..3) {
                0 => raw[at] = alphabet[rng.gen_range(0..alphabet.len())],
                1 => raw.insert(at, alphabet[rng.gen_range(0..alphabet.len())]),
                _ => {
                    let end = (at + rng.gen_range(0..20)).min(raw.len());
                    raw.drain(at..end);
                }
            }
        }
        let s = MessageStructure::parse(&raw);
        let mut out = Vec::new();
        s.write_envelope(&mut out);
        s.write_body(&mut out, true);
        s.write_body(&mut out, false);
        for part in [vec![], vec![1], vec![2], vec![1, 1], vec![3, 2, 1]] {
            for kind in [
                None,
                Some(SectionPart::Header),
                Some(SectionPart::Text),
                Some(SectionPart::Mime),
                Some(SectionPart::HeaderFields(vec!["from".into()])),
                Some(SectionPart::HeaderFieldsNot(vec!["from".into()])),
            ] {
                let bytes = section_bytes(
                    &raw,
                    &s,
                    &Section {
                        part: part.clone(),
                        kind,
                    },
                );
                assert!(bytes.len() <= raw.len() + 4);
            }
        }
        let cached = s.to_cache_bytes();
        assert_eq!(MessageStructure::from_cache_bytes(&cached).as_ref(), Ok(&s));
        // Garbage cache entries: errors only.
        let mut junk = cached.clone();
        for _ in 0..8 {
            let at = rng.gen_range(0..junk.len());
            junk[at] = rng.gen();
        }
        let _ = MessageStructure::from_cache_bytes(&junk);
        let noise: Vec<u8> = (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect();
        let _ = MessageStructure::from_cache_bytes(&noise);
    }
}
