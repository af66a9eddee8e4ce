// Sampling settings and the API key, kept in localStorage.
export interface SamplingSettings {
  temperature: number;
  top_p: number;
  top_k: number;
  min_p: number;
  max_tokens: number | null; // null: up to the end of the context
  repetition_penalty: number;
  seed: number | null;
  stop: string;
}

export const defaultSettings: SamplingSettings = {
  temperature: 0.7,
  top_p: 0.95,
  top_k: 40,
  min_p: 0.05,
  max_tokens: null,
  repetition_penalty: 1.1,
  seed: null,
  stop: '',
};

export interface SettingField {
  key: keyof SamplingSettings;
  label: string;
  min?: number;
  max?: number;
  step?: number;
  hint: string;
  optional?: boolean; // empty means null
}

export const settingFields: SettingField[] = [
  { key: 'temperature', label: 'Temperature', min: 0, max: 2, step: 0.05, hint: '0 = greedy' },
  { key: 'top_p', label: 'Top p', min: 0, max: 1, step: 0.01, hint: 'nucleus sampling' },
  { key: 'top_k', label: 'Top k', min: 0, max: 1000, step: 1, hint: '0 = off' },
  { key: 'min_p', label: 'Min p', min: 0, max: 1, step: 0.01, hint: '0 = off' },
  { key: 'max_tokens', label: 'Max tokens', min: 1, max: 1000000, step: 1, hint: 'empty = up to the context size', optional: true },
  { key: 'repetition_penalty', label: 'Repetition penalty', min: 0.5, max: 2, step: 0.01, hint: '1 = off' },
  { key: 'seed', label: 'Seed', min: 0, step: 1, hint: 'empty = random', optional: true },
  { key: 'stop', label: 'Stop strings', hint: 'comma-separated, \\n for newline' },
];

const SETTINGS_KEY = 'tandem.settings';
const API_KEY = 'tandem.apiKey';

export function loadSettings(): SamplingSettings {
  try {
    const raw = localStorage.getItem(SETTINGS_KEY);
    return raw ? { ...defaultSettings, ...(JSON.parse(raw) as Partial<SamplingSettings>) } : { ...defaultSettings };
  } catch {
    return { ...defaultSettings };
  }
}

export function saveSettings(s: SamplingSettings): void {
  localStorage.setItem(SETTINGS_KEY, JSON.stringify(s));
}

export function loadApiKey(): string {
  return localStorage.getItem(API_KEY) ?? '';
}

export function saveApiKey(key: string): void {
  if (key) localStorage.setItem(API_KEY, key);
  else localStorage.removeItem(API_KEY);
}

// The `params` object of a generate command.
export function toParams(s: SamplingSettings): Record<string, unknown> {
  const params: Record<string, unknown> = {
    temperature: s.temperature,
    top_p: s.top_p,
    top_k: s.top_k,
    min_p: s.min_p,
    repetition_penalty: s.repetition_penalty,
  };
  if (s.max_tokens !== null && Number.isFinite(s.max_tokens)) params.max_tokens = s.max_tokens;
  if (s.seed !== null && Number.isFinite(s.seed)) params.seed = s.seed;
  const stops = s.stop
    .split(',')
    .map((x) => x.replace(/\\n/g, '\n').replace(/\\t/g, '\t'))
    .filter((x) => x.length > 0);
  if (stops.length) params.stop = stops;
  return params;
}
