//! Chat templates rendered from the GGUF's own Jinja source (`tokenizer.chat_template`).
//!
//! llama.cpp's built-in template matcher recognises templates by fingerprint and re-implements them in C++;
//! for SmolLM2 it drops the default system prompt the real template inserts. Rendering the real Jinja source
//! with minijinja, with the settings Hugging Face's `apply_chat_template` uses, gives the exact prompt the model
//! was trained on.

use minijinja::{context, Environment, ErrorKind};

use crate::model::Message;

pub(crate) struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

const NAME: &str = "chat_template";

impl ChatTemplate {
    pub(crate) fn new(source: String, bos_token: String, eos_token: String) -> Result<Self, minijinja::Error> {
        let mut env = Environment::new();
        // As in transformers' `apply_chat_template`.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        });
        // A template is code from the model file: bound what one render may do.
        env.set_fuel(Some(FUEL));
        env.set_recursion_limit(RECURSION);
        env.add_template_owned(NAME, source)?;
        Ok(Self { env, bos_token, eos_token })
    }

    /// Renders the messages; fails once the output passes `max_bytes` (the rendering stops there).
    pub(crate) fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        max_bytes: usize,
    ) -> Result<String, minijinja::Error> {
        let template = self.env.get_template(NAME)?;
        let messages: Vec<_> =
            messages.iter().map(|m| context! { role => m.role.as_str(), content => m.content.as_str() }).collect();
        let mut out = Capped { buf: Vec::new(), max: max_bytes };
        template.render_captured_to(
            context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos_token.as_str(),
                eos_token => self.eos_token.as_str(),
            },
            &mut out,
        )?;
        String::from_utf8(out.buf)
            .map_err(|_| minijinja::Error::new(ErrorKind::InvalidOperation, "the template wrote invalid UTF-8"))
    }
}

/// Instructions one render may run: SmolLM2's template needs a few hundred per message.
const FUEL: u64 = 2_000_000;
/// Nesting of calls, macros and includes.
const RECURSION: usize = 64;

/// A writer that refuses to grow past `max` bytes.
struct Capped {
    buf: Vec<u8>,
    max: usize,
}

impl std::io::Write for Capped {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > self.max {
            return Err(std::io::Error::other(format!("the rendered prompt passes {} bytes", self.max)));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are helpful.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn default_system_prompt_is_kept() {
        let t = ChatTemplate::new(CHATML.into(), String::new(), "<|im_end|>".into()).unwrap();
        let out = t.render(&[Message::user("hi")], true, 1 << 20).unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn python_string_methods_work() {
        let t = ChatTemplate::new("{{ messages[0].content.strip() }}".into(), String::new(), String::new()).unwrap();
        assert_eq!(t.render(&[Message::user("  x ")], false, 1 << 20).unwrap(), "x");
    }

    #[test]
    fn raise_exception_becomes_an_error() {
        let t = ChatTemplate::new("{{ raise_exception('no') }}".into(), String::new(), String::new()).unwrap();
        assert!(t.render(&[], false, 1 << 20).is_err());
    }

    #[test]
    fn a_template_cannot_grow_or_loop_without_bound() {
        let started = std::time::Instant::now();
        for source in [
            "{{ 'x' * 100000000 }}",
            "{% for i in range(1000) %}{{ 'x' * 1000000 }}{% endfor %}",
            "{% for i in range(100000000) %}{% endfor %}",
            "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
        ] {
            let t = ChatTemplate::new(source.into(), String::new(), String::new()).unwrap();
            assert!(t.render(&[Message::user("hi")], true, 1 << 20).is_err(), "{source}");
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "{:?}", started.elapsed());
    }
}
