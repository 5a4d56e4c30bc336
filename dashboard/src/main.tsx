import { render } from 'preact';
import { App } from './App';
import { LiveData } from './live';
import './style.css';

const live = new LiveData();
live.start();
render(<App live={live} />, document.getElementById('app')!);
