// The settings drawer: sampling parameters and the API key.
import type { App } from './app';
import { h } from './dom';
import { defaultSettings, loadApiKey, saveApiKey, saveSettings, settingFields, type SamplingSettings } from './settings';

export function settingsPanel(app: App, onClose: () => void): HTMLElement {
  const inputs = new Map<keyof SamplingSettings, HTMLInputElement>();
  const fill = (s: SamplingSettings) => {
    for (const [key, input] of inputs) {
      const v = s[key];
      input.value = v === null ? '' : String(v);
    }
  };
  const read = (): SamplingSettings => {
    const s = { ...app.settings.value } as Record<string, unknown>;
    for (const f of settingFields) {
      const input = inputs.get(f.key)!;
      const text = input.value.trim();
      if (f.key === 'stop') s.stop = input.value;
      else if (f.optional && text === '') s[f.key] = null;
      else if (text !== '' && Number.isFinite(Number(text))) s[f.key] = f.step === 1 ? Math.max(f.min ?? 0, Math.floor(Number(text))) : Number(text);
    }
    return s as unknown as SamplingSettings;
  };
  const fields = settingFields.map((f) => {
    const input = h('input', {
      id: `setting-${f.key}`,
      name: f.key,
      type: f.key === 'stop' ? 'text' : 'number',
      min: f.min,
      max: f.max,
      step: f.step,
      placeholder: f.key === 'seed' ? 'random' : f.optional ? 'auto' : '',
    });
    input.addEventListener('change', () => {
      app.settings.set(read());
      saveSettings(app.settings.value);
    });
    inputs.set(f.key, input);
    return h('div', { class: 'field' }, h('label', { for: `setting-${f.key}`, text: f.label }), input, h('small', { class: 'muted', text: f.hint }));
  });
  fill(app.settings.value);
  const keyInput = h('input', { id: 'setting-api-key', type: 'password', autocomplete: 'off', placeholder: 'only if the server asks for one', value: loadApiKey() });
  const saveKey = h('button', { class: 'primary small', type: 'button', text: 'Use key' });
  saveKey.addEventListener('click', () => {
    saveApiKey(keyInput.value.trim());
    app.conn.reauthenticate();
    app.notify('API key saved in this browser.');
  });
  return h(
    'aside',
    { class: 'settings-panel', 'aria-label': 'Settings' },
    h('div', { class: 'panel-head' }, h('h2', { text: 'Settings' }), h('button', { class: 'ghost', type: 'button', text: '✕', 'aria-label': 'Close settings', onclick: onClose })),
    h('h3', { text: 'Sampling' }),
    ...fields,
    h(
      'button',
      {
        class: 'ghost small',
        type: 'button',
        text: 'Reset to defaults',
        onclick: () => {
          app.settings.set({ ...defaultSettings });
          saveSettings(app.settings.value);
          fill(app.settings.value);
        },
      },
    ),
    h('h3', { text: 'API key' }),
    h('div', { class: 'field' }, h('label', { for: 'setting-api-key', text: 'Key' }), keyInput, saveKey),
  );
}
